package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	_ "github.com/atasks-go/atasks/internal/demo" // the tasks the embedded gateway serves
)

// start runs the gateway, embedded, on a free loopback port with args,
// and returns its address; the test stops it when it ends.
func start(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrs, done := make(chan net.Addr, 1), make(chan error, 1)
	args = append([]string{"--listen", "127.0.0.1:0", "--amqp-url=", "--log-level", "warn"}, args...)
	go func() { done <- Gateway(ctx, args, func(a net.Addr) { addrs <- a }) }()
	var addr net.Addr
	select {
	case addr = <-addrs:
	case err := <-done:
		cancel()
		t.Fatalf("the gateway did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the gateway did not start in 30 s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("the gateway stopped with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the gateway did not stop in 30 s")
		}
	})
	return addr.String()
}

// post invokes task with input through client and returns the status and
// the decoded invocation.
func post(t *testing.T, client *http.Client, url, input string) (int, map[string]any) {
	t.Helper()
	res, err := client.Post(url, "application/json", strings.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var inv map[string]any
	if err := json.NewDecoder(res.Body).Decode(&inv); err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return res.StatusCode, inv
}

// Hundreds of clients that send half a request's headers and stop hold no
// one up: a call meanwhile answers at once, and the server closes them
// after --read-header-timeout.
func TestHalfOpenConnections(t *testing.T) {
	t.Parallel()
	const n, headerTimeout = 300, 2 * time.Second
	addr := start(t, "--read-header-timeout", headerTimeout.String())
	began := time.Now()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
		if _, err := io.WriteString(c, "POST /v1/ns/default/tasks/demo.add HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le"); err != nil {
			t.Fatal(err)
		}
	}
	latencies := callMeanwhile(t, "http://"+addr+"/v1/ns/default/tasks/demo.add", 20)
	if held := time.Since(began); held >= headerTimeout {
		t.Fatalf("the calls ended %v after the first half-open connection: not while all were held", held)
	}
	if slowest := slices.Max(latencies); slowest > time.Second {
		t.Errorf("a call took %v while %d connections were half open", slowest, n)
	}
	first, last := awaitClosed(t, conns, began)
	if first < headerTimeout*3/4 || last > headerTimeout+5*time.Second {
		t.Errorf("half-open connections closed from %v to %v after they began; want about %v", first, last, headerTimeout)
	}
	slices.Sort(latencies)
	t.Logf("%d half-open connections held; %d calls meanwhile took %v median, %v at most; the server closed them %v to %v after they began (--read-header-timeout %v)",
		n, len(latencies), latencies[len(latencies)/2], latencies[len(latencies)-1], first.Round(time.Millisecond), last.Round(time.Millisecond), headerTimeout)
}

// callMeanwhile calls demo.add count times over a fresh client and
// returns how long each call took.
func callMeanwhile(t *testing.T, url string, count int) []time.Duration {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	var latencies []time.Duration
	for range count {
		t0 := time.Now()
		if status, inv := post(t, client, url, `{"a":2,"b":3}`); status != 200 || inv["result"] != 5.0 {
			t.Fatalf("a call while connections are half open: %d %v", status, inv)
		}
		latencies = append(latencies, time.Since(t0))
	}
	return latencies
}

// awaitClosed waits up to 10 s for the server to close each of conns and
// returns when the first and the last closed, after began.
func awaitClosed(t *testing.T, conns []net.Conn, began time.Time) (first, last time.Duration) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 512)
	for i, c := range conns {
		_ = c.SetReadDeadline(deadline)
		var err error
		for err == nil {
			_, err = c.Read(buf) // whatever the server says, then its close
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection %d still open 10 s later", i)
		}
		if i == 0 {
			first = time.Since(began)
		}
	}
	return first, time.Since(began)
}

// Long-polls and WebSockets outlast --write-timeout and --read-timeout: a
// waiting request moves its deadline past its wait, and a WebSocket's
// connection is hijacked from the server's deadlines.
func TestWaitsOutlastTimeouts(t *testing.T) {
	t.Parallel()
	addr := start(t, "--write-timeout", "1s", "--read-timeout", "1s")
	base := "http://" + addr + "/v1/ns/default"
	if status, inv := post(t, http.DefaultClient, base+"/tasks/demo.sleep?wait=10s", `{"ms":1500,"value":"late"}`); status != 200 || inv["result"] != "late" {
		t.Errorf("a 1.5 s invoke past a 1 s write timeout: %d %v", status, inv)
	}
	status, inv := post(t, http.DefaultClient, base+"/tasks/demo.sleep?wait=0s", `{"ms":1500,"value":"polled"}`)
	if status != 202 {
		t.Fatalf("got %d %v", status, inv)
	}
	res, err := http.Get(base + "/invocations/" + inv["id"].(string) + "?wait=10s")
	if err != nil {
		t.Fatalf("a 1.5 s long-poll past a 1 s write timeout: %v", err)
	}
	defer res.Body.Close()
	if body, _ := io.ReadAll(res.Body); res.StatusCode != 200 || !bytes.Contains(body, []byte(`"result":"polled"`)) {
		t.Errorf("a long-poll past the write timeout: %d %s", res.StatusCode, body)
	}

	ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if m := wsCall(t, ws, `{"ms":1500,"value":"ws"}`, "demo.sleep"); !strings.Contains(m, `"result":"ws"`) {
		t.Errorf("a 1.5 s WebSocket call past the timeouts: %s", m)
	}
}

// wsCall calls task with input over ws and returns its result message.
func wsCall(t *testing.T, ws *websocket.Conn, input, task string) string {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"call","ref":"1","ns":"default","task":"`+task+`","input":`+input+`}`)); err != nil {
		t.Fatal(err)
	}
	for {
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("no result: %v", err)
		}
		if bytes.Contains(m, []byte(`"type":"result"`)) || bytes.Contains(m, []byte(`"type":"error"`)) {
			return string(m)
		}
	}
}

// With --tls-cert and --tls-key the gateway serves HTTPS and wss.
func TestTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	addr := start(t, "--tls-cert", certFile, "--tls-key", keyFile)
	tlsConfig := &tls.Config{RootCAs: pool}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	defer client.CloseIdleConnections()
	if status, inv := post(t, client, "https://"+addr+"/v1/ns/default/tasks/demo.add", `{"a":2,"b":3}`); status != 200 || inv["result"] != 5.0 {
		t.Errorf("demo.add over HTTPS: %d %v", status, inv)
	}
	if res, err := http.Get("http://" + addr + "/healthz"); err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Error("plain HTTP is served too")
		}
	}
	d := websocket.Dialer{TLSClientConfig: tlsConfig, HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.Dial("wss://"+addr+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if m := wsCall(t, ws, `{"a":2,"b":3}`, "demo.add"); !strings.Contains(m, `"result":5`) {
		t.Errorf("demo.add over wss: %s", m)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key to files and
// returns them with a pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "atasks test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func writePEM(t *testing.T, file, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A tokens file makes the API want a token; the open routes stay open.
func TestTokensFile(t *testing.T) {
	t.Parallel()
	const token = "cmd-test-token-0123456789"
	sum := sha256.Sum256([]byte(token))
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("# test\nci sha256:"+hex.EncodeToString(sum[:])+" default:invoke\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := "http://" + start(t, "--tokens", file)
	for _, tc := range []struct {
		method, path, auth string
		status             int
	}{
		{"GET", "/healthz", "", 200},
		{"POST", "/v1/ns/default/tasks/demo.add", "", 401},
		{"POST", "/v1/ns/default/tasks/demo.add", "Bearer " + token, 200},
		{"POST", "/v1/ns/seed/tasks/task_three", "Bearer " + token, 403},
		{"GET", "/metrics", "Bearer " + token, 403},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(`{"a":1,"b":2}`))
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.status {
			t.Errorf("%s %s (%q): %d; want %d", tc.method, tc.path, tc.auth, res.StatusCode, tc.status)
		}
	}
}

// Without tokens the gateway serves loopback addresses only, unless
// --insecure; errors never show a token.
func TestSecurityChecks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		listen   string
		tokens   int
		insecure bool
		ok       bool
	}{
		{"127.0.0.1:8080", 0, false, true},
		{"[::1]:8080", 0, false, true},
		{"localhost:8080", 0, false, true},
		{":8080", 0, false, false},
		{"0.0.0.0:8080", 0, false, false},
		{"[::]:8080", 0, false, false},
		{"192.0.2.7:8080", 0, false, false},
		{"0.0.0.0:8080", 1, false, true},
		{"0.0.0.0:8080", 0, true, true},
	} {
		if err := checkExposure(tc.listen, tc.tokens, tc.insecure); (err == nil) != tc.ok {
			t.Errorf("%s, %d tokens, insecure %v: %v", tc.listen, tc.tokens, tc.insecure, err)
		}
	}
	err := Gateway(context.Background(), []string{"--listen", "0.0.0.0:0", "--amqp-url=", "--log-level", "error"}, nil)
	if err == nil || !strings.Contains(err.Error(), "--insecure") {
		t.Errorf("serving 0.0.0.0 without tokens: %v", err)
	}
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("ci plain-secret-0123456789 default:*\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadTokens(file); err == nil || strings.Contains(err.Error(), "plain-secret") {
		t.Errorf("a token in plain text in the file: %v", err)
	}
}

// hash-token prints what sha256sum prints for the token, as a tokens file wants it.
func TestHashToken(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := hashToken(strings.NewReader("s3cret-token\n"), &out); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("s3cret-token"))
	if got := strings.TrimSpace(out.String()); got != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("got %s", got)
	}
	for _, in := range []string{"", "\n", "two\nlines\n"} {
		if err := hashToken(strings.NewReader(in), io.Discard); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func TestParseBodyLimits(t *testing.T) {
	t.Parallel()
	got, err := parseBodyLimits(" default=64, big=10485760,,")
	if err != nil || len(got) != 2 || got["default"] != 64 || got["big"] != 10<<20 {
		t.Errorf("got %v, %v", got, err)
	}
	for _, bad := range []string{"default", "default=", "=5", "default=0", "default=1k"} {
		if _, err := parseBodyLimits(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
