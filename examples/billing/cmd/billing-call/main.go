// Command billing-call charges an account by calling billing.charge
// through RabbitMQ with the SDK, with no gateway: some billing-worker
// serves it. It prints the receipt as JSON, or the error's code, message
// and details and exits 1.
//
//	billing-call -account acme -amount 1200 -provider-failures 1
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"example.com/billing"
	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/amqp"
)

func main() {
	url := flag.String("amqp-url", envOr("ATASKS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ URL (ATASKS_AMQP_URL)")
	prefix := flag.String("prefix", envOr("ATASKS_PREFIX", "atasks"), "first part of every exchange and queue name; the workers' (ATASKS_PREFIX)")
	account := flag.String("account", "acme", "the account to charge")
	amount := flag.Int64("amount", 1200, "the amount, in cents")
	failures := flag.Int("provider-failures", 0, "how many capture attempts the simulated provider refuses")
	timeout := flag.Duration("timeout", 30*time.Second, "how long to wait for the outcome")
	flag.Parse()
	if err := run(*url, *prefix, billing.ChargeRequest{Account: *account, AmountCents: *amount, ProviderFailures: *failures}, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "billing-call:", err)
		os.Exit(1)
	}
}

func run(url, prefix string, req billing.ChargeRequest, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	nss, err := amqp.Namespaces(amqp.Config{URL: url, Prefix: prefix, Logger: logger}, billing.Namespace)
	if err != nil {
		return err
	}
	client, err := atasks.NewClient(atasks.Config{Namespaces: nss, Logger: logger})
	if err != nil {
		return err
	}
	if err := client.Start(ctx); err != nil {
		return err
	}
	defer client.Stop(context.Background())

	receipt, err := billing.Charge.Call(atasks.WithClient(ctx, client), req)
	var e *atasks.Error
	switch {
	case errors.Is(err, billing.ErrInsufficientFunds) && errors.As(err, &e):
		var d billing.InsufficientFunds
		if json.Unmarshal(e.Details, &d) == nil {
			return fmt.Errorf("%w (details: account %s has %d cents, %d asked)", err, d.Account, d.BalanceCents, d.AmountCents)
		}
		return err
	case err != nil:
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(receipt)
}

// envOr returns the environment variable name, or def if it is empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
