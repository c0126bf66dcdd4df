package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// BrokerTLS adds --amqp-ca, --amqp-cert and --amqp-key to f; the function
// it returns, once f is parsed, builds the TLS configuration of amqps://
// connections they describe: nil when none is given (amqps:// then trusts
// the system's roots and presents no client certificate).
func (f Flags) BrokerTLS() func() (*tls.Config, error) {
	ca := f.String("amqp-ca", "ATASKS_AMQP_CA", "", "amqps://: PEM file of the CA certificates that sign the broker's certificate (default: the system's)")
	cert := f.String("amqp-cert", "ATASKS_AMQP_CERT", "", "amqps://: PEM file of this process's client certificate, with --amqp-key")
	key := f.String("amqp-key", "ATASKS_AMQP_KEY", "", "amqps://: PEM file of the client certificate's private key")
	return func() (*tls.Config, error) { return BrokerTLSConfig(*ca, *cert, *key) }
}

// BrokerTLSConfig builds a TLS client configuration from PEM files: the
// CA certificates to trust (empty: the system's) and a client certificate
// and key (both or neither). It returns nil when all three are empty.
func BrokerTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--amqp-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--amqp-ca: no PEM certificate in %s", caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("--amqp-cert and --amqp-key go together")
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--amqp-cert/--amqp-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
