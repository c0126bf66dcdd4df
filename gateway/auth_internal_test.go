package gateway

import (
	"testing"

	"github.com/atasks-go/atasks/api"
)

// The operations the document marks with the bearer security scheme are
// those access lists, and no others.
func TestAccessMatchesDocument(t *testing.T) {
	t.Parallel()
	doc, err := api.Load()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			seen[op.OperationID] = true
			secured := op.Security != nil && len(*op.Security) == 1 && (*op.Security)[0]["bearer"] != nil
			if _, listed := access[op.OperationID]; secured != listed {
				t.Errorf("%s %s (%s): bearer security %v in the document, in access %v", method, path, op.OperationID, secured, listed)
			}
		}
	}
	for id := range access {
		if !seen[id] {
			t.Errorf("access lists %q, which the document lacks", id)
		}
	}
}

// A token's rights: admin is all of them, * every namespace.
func TestRightsIn(t *testing.T) {
	t.Parallel()
	tok := &Token{Grants: map[string]Right{"a": RightRead, "b": RightAdmin, AnyNamespace: RightInvoke}}
	for _, tc := range []struct {
		ns   string
		want Right
	}{{"a", RightRead | RightInvoke}, {"b", allRights}, {"c", RightInvoke}} {
		if got := tok.rightsIn(tc.ns); got != tc.want {
			t.Errorf("%s: %b; want %b", tc.ns, got, tc.want)
		}
	}
	c := caller{token: tok}
	if !c.everywhere(RightInvoke, []string{"a", "b", "c"}) || c.everywhere(RightRead, []string{"a", "b", "c"}) || (caller{}).sees("a") {
		t.Error("everywhere or sees is wrong")
	}
}
