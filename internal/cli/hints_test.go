package cli

import (
	"net"
	"strings"
	"testing"

	"github.com/atasks-go/atasks/internal/transport/amqp"
	"github.com/atasks-go/atasks/wire"
)

// A refused broker says how to get one, and never shows the password.
func TestBrokerHint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	u := "amqp://guest:s3cret@" + addr + "/"
	tr, err := amqp.New(amqp.Config{URL: u})
	if err != nil {
		t.Fatal(err)
	}
	err = BrokerHint(tr.Open(t.Context(), func(*wire.Reply) {}), u)
	if err == nil || !strings.Contains(err.Error(), "ATASKS_AMQP_URL") || !strings.Contains(err.Error(), "rabbitmq-server") || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("refused broker: %v", err)
	}
}

// A taken port names the flag and variable that choose another.
func TestListenHint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = net.Listen("tcp", ln.Addr().String())
	err = ListenHint(err, ln.Addr().String(), "listen", "ATASKS_LISTEN")
	if err == nil || !strings.Contains(err.Error(), "--listen (ATASKS_LISTEN)") {
		t.Errorf("taken port: %v", err)
	}
}
