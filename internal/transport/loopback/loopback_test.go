package loopback_test

import (
	"testing"

	"github.com/atasks-go/atasks/internal/transport/loopback"
	"github.com/atasks-go/atasks/transporttest"
	"github.com/atasks-go/atasks/wire"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	t.Parallel()
	transporttest.Run(t, func(*testing.T) (wire.Transport, wire.Transport) {
		tr := loopback.New()
		return tr, tr
	}, transporttest.Options{})
}
