package gateway

// Access control: bearer tokens, known by their SHA-256, each with rights
// per namespace. What each operation needs is the table access below; the
// README's "Security and limits" shows it to users. A gateway without
// tokens is open: everyone may do everything.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/atasks-go/atasks"
)

// Right is a set of things a token may do in a namespace.
type Right uint8

// The rights; RightAdmin includes the others.
const (
	RightInvoke Right = 1 << iota // start invocations: POST tasks, WebSocket call
	RightRead                     // read invocations and the catalog: GET, WebSocket subscribe and, held everywhere, monitor
	RightCancel                   // cancel invocations: DELETE, WebSocket cancel
	RightAdmin                    // all of the above; held everywhere, also /metrics

	allRights = RightInvoke | RightRead | RightCancel | RightAdmin
)

// rightNames are the rights as tokens files and ATASKS_TOKENS spell them.
var rightNames = map[string]Right{"invoke": RightInvoke, "read": RightRead, "cancel": RightCancel, "admin": allRights, "*": allRights}

// AnyNamespace in a token's grants stands for every namespace, those added
// later included.
const AnyNamespace = "*"

// minTokenLen is the fewest characters a token given in plain text may have.
const minTokenLen = 16

// Token is a bearer token the gateway accepts, known by its hash only.
type Token struct {
	// Name says which token in messages and logs; the token itself never
	// appears in either.
	Name string
	// Hash is the token's SHA-256 (HashToken).
	Hash [sha256.Size]byte
	// Grants are the token's rights by namespace; AnyNamespace grants
	// rights in every namespace.
	Grants map[string]Right
}

// rightsIn returns what t may do in namespace ns.
func (t *Token) rightsIn(ns string) Right {
	r := t.Grants[ns] | t.Grants[AnyNamespace]
	if r&RightAdmin != 0 {
		r = allRights
	}
	return r
}

// HashToken returns the SHA-256 of token, as tokens files store it.
func HashToken(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// FormatHash writes a token's hash as tokens files spell it: "sha256:"
// and 64 hex digits.
func FormatHash(h [sha256.Size]byte) string { return "sha256:" + hex.EncodeToString(h[:]) }

// parseHash reads a hash spelled as FormatHash does.
func parseHash(s string) ([sha256.Size]byte, bool) {
	var h [sha256.Size]byte
	hexPart, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(hexPart) != 2*sha256.Size {
		return h, false
	}
	_, err := hex.Decode(h[:], []byte(hexPart))
	return h, err == nil
}

// ParseTokens reads a tokens file: one token a line, three fields
// separated by white space, "NAME sha256:HEX GRANTS" (see parseGrants);
// blank lines and lines starting with # are skipped. The file holds the
// tokens' hashes, never the tokens.
func ParseTokens(r io.Reader) ([]Token, error) {
	var tokens []Token
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 3 {
			return nil, fmt.Errorf("line %d: want NAME sha256:HEX GRANTS, got %d fields", n, len(fields))
		}
		hash, ok := parseHash(fields[1])
		if !ok {
			return nil, fmt.Errorf("line %d (%s): the second field must be the token's hash, sha256: and 64 hex digits (gateway hash-token makes it)", n, fields[0])
		}
		grants, err := parseGrants(fields[2])
		if err != nil {
			return nil, fmt.Errorf("line %d (%s): %w", n, fields[0], err)
		}
		tokens = append(tokens, Token{Name: fields[0], Hash: hash, Grants: grants})
	}
	return tokens, sc.Err()
}

// ParseTokenList parses the tokens of $ATASKS_TOKENS: entries
// "TOKEN=GRANTS" separated by ";" or white space, where TOKEN is the token
// itself (at least 16 characters, hashed here) or its hash, sha256:HEX.
// Errors name an entry by its position, never by its token.
func ParseTokenList(s string) ([]Token, error) {
	var tokens []Token
	entries := strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
	for i, e := range entries {
		name := fmt.Sprintf("ATASKS_TOKENS#%d", i+1)
		at := strings.LastIndexByte(e, '=')
		if at <= 0 {
			return nil, fmt.Errorf("%s: want TOKEN=GRANTS", name)
		}
		secret, spec := e[:at], e[at+1:]
		hash, ok := parseHash(secret)
		if !ok {
			if len(secret) < minTokenLen {
				return nil, fmt.Errorf("%s: a token needs at least %d characters", name, minTokenLen)
			}
			hash = HashToken(secret)
		}
		grants, err := parseGrants(spec)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		tokens = append(tokens, Token{Name: name, Hash: hash, Grants: grants})
	}
	return tokens, nil
}

// parseGrants parses "NS:RIGHTS,NS:RIGHTS…", where NS is a namespace or *
// (every one) and RIGHTS is * (all) or rights joined by +: invoke, read,
// cancel, admin. The namespace ends at the last colon.
func parseGrants(s string) (map[string]Right, error) {
	grants := map[string]Right{}
	for g := range strings.SplitSeq(s, ",") {
		at := strings.LastIndexByte(g, ':')
		if at <= 0 || at == len(g)-1 {
			return nil, fmt.Errorf("grant %q: want NAMESPACE:RIGHTS, e.g. default:invoke+read or *:*", g)
		}
		ns := g[:at]
		for name := range strings.SplitSeq(g[at+1:], "+") {
			r, ok := rightNames[name]
			if !ok {
				return nil, fmt.Errorf("grant %q: right %q is none of invoke, read, cancel, admin, *", g, name)
			}
			grants[ns] |= r
		}
	}
	return grants, nil
}

// duplicateNames returns the names given to more than one token.
func duplicateNames(tokens []Token) []string {
	seen := map[string]int{}
	var dups []string
	for _, t := range tokens {
		if seen[t.Name]++; seen[t.Name] == 2 {
			dups = append(dups, t.Name)
		}
	}
	return dups
}

// validateTokens checks that tokens are usable and distinct.
func validateTokens(tokens []Token) error {
	seen := map[[sha256.Size]byte]string{}
	for _, t := range tokens {
		if t.Hash == ([sha256.Size]byte{}) || len(t.Grants) == 0 {
			return fmt.Errorf("gateway: token %q needs a hash and grants", t.Name)
		}
		if other, dup := seen[t.Hash]; dup {
			return fmt.Errorf("gateway: tokens %q and %q are the same token", other, t.Name)
		}
		seen[t.Hash] = t.Name
	}
	return nil
}

// caller is who makes a request: the holder of a token, or anyone at all
// when the gateway has no tokens. The zero caller may do nothing.
type caller struct {
	token *Token
	open  bool // the gateway has no tokens
}

// may tells whether c has right r in namespace ns.
func (c caller) may(ns string, r Right) bool {
	return c.open || c.token != nil && c.token.rightsIn(ns)&r == r
}

// sees tells whether c has any right in namespace ns: only then may it
// learn whether ns exists.
func (c caller) sees(ns string) bool { return c.open || c.token != nil && c.token.rightsIn(ns) != 0 }

// everywhere tells whether c has right r in each of namespaces nss.
func (c caller) everywhere(r Right, nss []string) bool {
	return !slices.ContainsFunc(nss, func(ns string) bool { return !c.may(ns, r) })
}

// callerKey is the context key of the request's caller.
type callerKey struct{}

func withCaller(ctx context.Context, c caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// callerOf returns the caller the guard admitted for ctx's request.
func callerOf(ctx context.Context) caller {
	c, _ := ctx.Value(callerKey{}).(caller)
	return c
}

// need is what an operation requires of its caller.
type need struct {
	right      Right // 0: any known token
	everywhere bool  // right in every namespace served, not only in {ns}
	anyRight   bool  // some right in {ns}: enough to learn whether it exists
}

// access says what each operation of the API document needs, by its
// operationId; operations it does not list are open to all. The
// document's security requirements match it (TestAccessMatchesDocument).
var access = map[string]need{
	"invoke":           {right: RightInvoke},
	"getInvocation":    {right: RightRead},
	"cancelInvocation": {right: RightCancel},
	"listTasks":        {right: RightRead},
	"getTask":          {right: RightRead},
	"tasksOpenAPI":     {right: RightRead},
	"listNamespaces":   {}, // lists only those the token sees
	"webSocket":        {}, // each message is checked (ws.go)
	"metrics":          {right: RightAdmin, everywhere: true},
}

// Codes of the problems of access control.
const (
	codeUnauthorized = "unauthorized"
	codeForbidden    = "forbidden"
)

// authFailure is why a request is not authenticated: its detail and the
// WWW-Authenticate challenge of the 401.
type authFailure struct{ challenge, detail string }

var (
	errNoToken = &authFailure{`Bearer realm="atasks"`,
		"this gateway needs a bearer token: send the header Authorization: Bearer, a space and the token"}
	errBadHeader = &authFailure{`Bearer realm="atasks", error="invalid_request"`,
		`the Authorization header must be "Bearer ", one space, and the token, with no other white space`}
	errBadProtocol = &authFailure{`Bearer realm="atasks", error="invalid_request"`,
		"the bearer. subprotocol must carry the token in unpadded base64url"}
	errUnknownToken = &authFailure{`Bearer realm="atasks", error="invalid_token"`,
		"the bearer token is not valid on this gateway"}
)

// wsTokenPrefix starts the WebSocket subprotocol that carries a token from
// browsers, which cannot set headers on a WebSocket: "bearer." and the
// token in unpadded base64url.
const wsTokenPrefix = "bearer."

// authenticate returns who sends r: anyone when the gateway has no tokens,
// else the holder of the token r carries, in its Authorization header or,
// on a WebSocket upgrade (ws), in a bearer subprotocol.
func (g *Gateway) authenticate(r *http.Request, ws bool) (caller, *authFailure) {
	if len(g.cfg.Tokens) == 0 {
		return caller{open: true}, nil
	}
	secret, fail := credential(r, ws)
	if fail != nil {
		return caller{}, fail
	}
	if t := g.lookup(HashToken(secret)); t != nil {
		return caller{token: t}, nil
	}
	return caller{}, errUnknownToken
}

// lookup returns the token whose hash is h, or nil; it compares h with
// every token's hash in constant time.
func (g *Gateway) lookup(h [sha256.Size]byte) *Token {
	var found *Token
	for i := range g.cfg.Tokens {
		if subtle.ConstantTimeCompare(h[:], g.cfg.Tokens[i].Hash[:]) == 1 {
			found = &g.cfg.Tokens[i]
		}
	}
	return found
}

// credential returns the token r carries: its Authorization header's, or,
// on a WebSocket upgrade (ws) without one, that of its bearer subprotocol.
func credential(r *http.Request, ws bool) (string, *authFailure) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, secret, ok := strings.Cut(h, " ")
		// A token padded with white space is not taken for the token it
		// pads: no token has any (RFC 6750's b64token).
		if !ok || !strings.EqualFold(scheme, "Bearer") || secret == "" || strings.TrimSpace(secret) != secret {
			return "", errBadHeader
		}
		return secret, nil
	}
	if !ws {
		return "", errNoToken
	}
	for _, p := range websocketProtocols(r) {
		if enc, ok := strings.CutPrefix(p, wsTokenPrefix); ok {
			b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
			if err != nil || len(b) == 0 {
				return "", errBadProtocol
			}
			return string(b), nil
		}
	}
	return "", errNoToken
}

// websocketProtocols lists the subprotocols a WebSocket upgrade offers.
func websocketProtocols(r *http.Request) []string {
	var out []string
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// permit returns nil if c may do what n asks in namespace ns, else a
// "forbidden" error. The error is the same whether ns exists or not.
func (g *Gateway) permit(c caller, n need, ns string) error {
	switch {
	case n.anyRight && c.sees(ns):
		return nil
	case n.anyRight:
		return &atasks.Error{Code: codeForbidden, Message: fmt.Sprintf("this token has no right in namespace %q", ns)}
	case n.right == 0 && (c.open || c.token != nil):
		return nil
	case n.everywhere && c.everywhere(n.right, g.cfg.Client.Namespaces()):
		return nil
	case !n.everywhere && c.may(ns, n.right):
		return nil
	case n.everywhere:
		return forbiddenEverywhere(n.right)
	}
	return forbidden(ns, n.right)
}

// forbiddenEverywhere is the error of a caller lacking right r in some
// namespace when it needs it in every one.
func forbiddenEverywhere(r Right) *atasks.Error {
	return &atasks.Error{Code: codeForbidden, Message: fmt.Sprintf("this token lacks the %s right in some namespace; this needs it in every one", rightName(r))}
}

// forbidden is the error of a caller lacking right r in namespace ns.
func forbidden(ns string, r Right) *atasks.Error {
	return &atasks.Error{Code: codeForbidden, Message: fmt.Sprintf("this token lacks the %s right in namespace %q", rightName(r), ns)}
}

// rightName names a single right.
func rightName(r Right) string {
	switch r {
	case RightInvoke:
		return "invoke"
	case RightRead:
		return "read"
	case RightCancel:
		return "cancel"
	}
	return "admin"
}

// writeUnauthorized answers 401 with f's challenge.
func writeUnauthorized(w http.ResponseWriter, f *authFailure) {
	w.Header().Set("WWW-Authenticate", f.challenge)
	writeProblem(w, codeUnauthorized, f.detail)
}
