package gateway_test

import (
	"maps"
	"strings"
	"testing"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/gateway"
)

// Tokens of the tests' secured gateways.
const (
	adminToken  = "admin-token-0123456789"  // every right everywhere
	readerToken = "reader-token-0123456789" // read in default
	spentToken  = "spent-token-0123456789"  // every right everywhere; spent on rate limits
)

// testTokens are the tokens above, as a gateway takes them.
func testTokens(t testing.TB) []gateway.Token {
	t.Helper()
	tokens, err := gateway.ParseTokenList(adminToken + "=*:* " + readerToken + "=default:read;" + spentToken + "=*:admin")
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

// bearer is the Authorization header carrying token.
func bearer(token string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + token}
}

func TestParseTokens(t *testing.T) {
	t.Parallel()
	hash := gateway.FormatHash(gateway.HashToken("s3cret-s3cret-s3cret"))
	for _, tc := range []struct {
		file  string
		want  map[string]map[string]gateway.Right // by name
		inErr string
	}{
		{"# name hash grants\n\nci " + hash + " default:invoke+read,seed:*\n", map[string]map[string]gateway.Right{
			"ci": {"default": gateway.RightInvoke | gateway.RightRead, "seed": 15}}, ""},
		{"ops\t" + hash + "\t*:admin", map[string]map[string]gateway.Right{"ops": {"*": 15}}, ""},
		{"ns:with:colons " + hash + " a:b:cancel", map[string]map[string]gateway.Right{"ns:with:colons": {"a:b": gateway.RightCancel}}, ""},
		{"ci " + hash, nil, "line 1: want NAME sha256:HEX GRANTS"},
		{"ci s3cret-s3cret-s3cret default:*", nil, "the token's hash"},
		{"ci sha256:abc default:*", nil, "the token's hash"},
		{"ci " + hash + " default", nil, "want NAMESPACE:RIGHTS"},
		{"ci " + hash + " default:", nil, "want NAMESPACE:RIGHTS"},
		{"ci " + hash + " default:write", nil, `right "write" is none of`},
		{"ci " + hash + " default:read,", nil, "want NAMESPACE:RIGHTS"},
	} {
		tokens, err := gateway.ParseTokens(strings.NewReader(tc.file))
		if tc.inErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.inErr) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("%q: got error %v; want one with %q, without the token", tc.file, err, tc.inErr)
			}
			continue
		}
		got := map[string]map[string]gateway.Right{}
		for _, tok := range tokens {
			got[tok.Name] = tok.Grants
			if gateway.FormatHash(tok.Hash) != hash {
				t.Errorf("%q: hash %s", tc.file, gateway.FormatHash(tok.Hash))
			}
		}
		if err != nil || !maps.EqualFunc(got, tc.want, maps.Equal) {
			t.Errorf("%q: got %v, %v; want %v", tc.file, got, err, tc.want)
		}
	}
}

// Tokens in $ATASKS_TOKENS are plain or hashed; errors never show them.
func TestParseTokenList(t *testing.T) {
	t.Parallel()
	tokens, err := gateway.ParseTokenList(" s3cret-s3cret-s3cret=default:invoke ;\n" +
		gateway.FormatHash(gateway.HashToken("other-other-other-other")) + "=*:read")
	if err != nil || len(tokens) != 2 {
		t.Fatalf("got %v, %v", tokens, err)
	}
	if tokens[0].Hash != gateway.HashToken("s3cret-s3cret-s3cret") || tokens[0].Name != "ATASKS_TOKENS#1" ||
		tokens[1].Hash != gateway.HashToken("other-other-other-other") || tokens[1].Grants["*"] != gateway.RightRead {
		t.Errorf("got %+v", tokens)
	}
	for _, bad := range []string{"s3cret", "s3cret-s3cret-s3cret", "s3cret-s3cret-s3cret=default:steal", "short-s3cret=default:*", "=default:*"} {
		_, err := gateway.ParseTokenList("good-good-good-good=*:* " + bad)
		if err == nil || !strings.Contains(err.Error(), "ATASKS_TOKENS#2") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: got error %v; want one naming entry 2 and not the token", bad, err)
		}
	}
}

// A gateway refuses tokens it cannot use.
func TestTokensValidated(t *testing.T) {
	t.Parallel()
	client, err := atasks.NewClient(atasks.Config{})
	if err != nil {
		t.Fatal(err)
	}
	twice := append(testTokens(t), testTokens(t)[0])
	for _, tokens := range [][]gateway.Token{twice, {{Name: "empty", Grants: map[string]gateway.Right{"*": 1}}}, {{Name: "none", Hash: gateway.HashToken("x")}}} {
		if _, err := gateway.New(gateway.Config{Client: client, Tokens: tokens}); err == nil || !strings.Contains(err.Error(), "token") {
			t.Errorf("%v: got %v", tokens, err)
		}
	}
}
