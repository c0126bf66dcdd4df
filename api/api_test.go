package api_test

import (
	"context"
	"testing"

	"github.com/atasks-go/atasks/api"
)

func TestSpecIsValid(t *testing.T) {
	t.Parallel()
	doc, err := api.Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
}
