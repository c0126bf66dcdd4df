package cli

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
)

// BrokerHint adds to err, a failure to reach the broker at amqpURL, what to
// do about it; other errors it returns as they are. The URL's password is
// never shown.
func BrokerHint(err error, amqpURL string) error {
	var dns *net.DNSError
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.EHOSTUNREACH) && !errors.As(err, &dns) {
		return err
	}
	shown := amqpURL
	if u, perr := url.Parse(amqpURL); perr == nil {
		shown = u.Redacted()
	}
	return fmt.Errorf("%w\nno RabbitMQ answers at %s: start one (sudo rabbitmq-server -detached, or docker run -d -p 5672:5672 rabbitmq:3-management), "+
		"or point --amqp-url (ATASKS_AMQP_URL) at yours; without a broker, the gateway alone runs the demo tasks in-process", err, shown)
}

// ListenHint adds to err, a failure to listen on addr given by flag (and
// environment variable env), what to do when the address is taken.
func ListenHint(err error, addr, flag, env string) error {
	if !errors.Is(err, syscall.EADDRINUSE) {
		return err
	}
	return fmt.Errorf("%w\n%s is taken, perhaps by another gateway or worker: choose another address with --%s (%s)", err, addr, flag, env)
}
