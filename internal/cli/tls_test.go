package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/atasks-go/atasks/internal/transport/amqp"
	"github.com/atasks-go/atasks/wire"
)

// An amqps:// transport built from --amqp-ca, --amqp-cert and --amqp-key
// verifies the broker against the CA and presents its client certificate;
// without the CA it refuses the broker. The "broker" is a TLS endpoint
// that checks client certificates and speaks no AMQP: the TLS handshake is
// what is tested.
func TestBrokerTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCert(t, "atasks test CA", nil, nil)
	server, serverKey := newCert(t, "127.0.0.1", ca, caKey)
	client, clientKey := newCert(t, "atasks-test-client", ca, caKey)
	write := func(name string, blocks ...*pem.Block) string {
		var b []byte
		for _, bl := range blocks {
			b = append(b, pem.EncodeToMemory(bl)...)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write("ca.pem", certPEM(ca))
	certFile := write("client.pem", certPEM(client))
	keyFile := write("client-key.pem", keyPEM(t, clientKey))

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	peers := make(chan string, 10)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{server.Raw}, PrivateKey: serverKey}},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: pool,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			tc := conn.(*tls.Conn)
			if tc.Handshake() == nil {
				peers <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
			}
			conn.Close() // no AMQP here
		}
	}()
	url := "amqps://guest:guest@" + ln.Addr().String() + "/"

	cfg, err := BrokerTLSConfig(caFile, certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := openOnce(url, cfg); err == nil {
		t.Fatal("opened a transport on an endpoint that speaks no AMQP")
	}
	select {
	case cn := <-peers:
		if cn != "atasks-test-client" {
			t.Errorf("the broker saw client %q", cn)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no TLS handshake with the client certificate")
	}

	noCA, err := BrokerTLSConfig("", certFile, keyFile) // the system's roots do not know our CA
	if err != nil {
		t.Fatal(err)
	}
	if err := openOnce(url, noCA); err == nil {
		t.Fatal("trusted a broker whose CA is unknown")
	}
	select {
	case cn := <-peers:
		t.Errorf("a handshake succeeded without the CA (client %q)", cn)
	default:
	}
	if _, err := BrokerTLSConfig("", certFile, ""); err == nil {
		t.Error("--amqp-cert without --amqp-key accepted")
	}
}

// openOnce tries to open an amqps transport for a moment.
func openOnce(url string, cfg *tls.Config) error {
	tr, err := amqp.New(amqp.Config{URL: url, TLS: cfg, Prefix: "tlstest"})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	err = tr.Open(ctx, func(*wire.Reply) {})
	_ = tr.Close(context.Background())
	return err
}

// newCert makes a certificate for name, signed by parent (self-signed and
// a CA when parent is nil).
func newCert(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	signer, signerKey := tmpl, key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	} else {
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func certPEM(c *x509.Certificate) *pem.Block { return &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw} }

func keyPEM(t *testing.T, k *ecdsa.PrivateKey) *pem.Block {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
}
