// Package billing is a team's own atasks tasks, in a module of its own that
// uses only atasks' public packages: it charges accounts of a tiny in-memory
// ledger through a simulated payment provider.
//
//   - billing.authorize checks the account's balance; it fails with the typed
//     error insufficient_funds (details: InsufficientFunds).
//   - billing.capture asks the payment provider for the money. The provider
//     is flaky on demand: it refuses the first ProviderFailures attempts with
//     a retryable provider_unavailable error, and the task's retry policy
//     runs it again.
//   - billing.charge awaits billing.authorize, then billing.capture.
//   - billing.charge_all runs billing.charge for several requests in
//     parallel and awaits them all with atasks.WaitAll.
//
// A program that imports the package can call the tasks (Charge.Call) or,
// run by cli.RunWorker as cmd/billing-worker does, serve them.
package billing

import (
	"context"
	"fmt"
	"time"

	"github.com/atasks-go/atasks"
)

// Namespace is the atasks namespace of the billing tasks.
const Namespace = "billing"

// The codes of the billing tasks' own errors.
const (
	// CodeInsufficientFunds: the account's balance is below the amount;
	// the details are an InsufficientFunds.
	CodeInsufficientFunds = "insufficient_funds"
	// CodeUnknownAccount: the ledger has no such account.
	CodeUnknownAccount = "unknown_account"
	// CodeProviderUnavailable: the payment provider refused an attempt;
	// retryable.
	CodeProviderUnavailable = "provider_unavailable"
)

// ErrInsufficientFunds matches, with errors.Is, the error of a charge
// whose account lacks the money, wherever the call was made.
var ErrInsufficientFunds = &atasks.Error{Code: CodeInsufficientFunds}

// The tasks. Their names are explicit because callers in other programs
// and languages know them by name: renaming a Go function must not rename
// a task.
var (
	// Authorize checks that an account can pay an amount.
	Authorize = atasks.Define(authorize, atasks.Name("billing.authorize"), atasks.InNamespace(Namespace))
	// Capture takes an authorized amount from the payment provider,
	// retrying up to 4 attempts in all, 200 ms then 400 ms then 800 ms
	// apart (± 20%).
	Capture = atasks.Define(capture, atasks.Name("billing.capture"), atasks.InNamespace(Namespace),
		atasks.Retry(atasks.RetryPolicy{MaxAttempts: 4, Initial: 200 * time.Millisecond, Max: 2 * time.Second}))
	// Charge authorizes, then captures: two child invocations in sequence.
	Charge = atasks.Define(charge, atasks.Name("billing.charge"), atasks.InNamespace(Namespace))
	// ChargeAll charges every request in parallel; the first failure
	// cancels the others and is its outcome.
	ChargeAll = atasks.Define(chargeAll, atasks.Name("billing.charge_all"), atasks.InNamespace(Namespace))
)

// balances is the ledger, in cents. A real service would ask a database.
var balances = map[string]int64{
	"acme":  50_000, // $500.00
	"alice": 1_000,  // $10.00
}

// ChargeRequest is the input of Charge.
type ChargeRequest struct {
	Account     string `json:"account"`
	AmountCents int64  `json:"amount_cents"`
	// ProviderFailures is how many attempts of the capture the simulated
	// payment provider refuses before it accepts one: 0 in real life, more
	// to watch the retries.
	ProviderFailures int `json:"provider_failures,omitempty"`
}

// AuthorizeRequest is the input of Authorize.
type AuthorizeRequest struct {
	Account     string `json:"account"`
	AmountCents int64  `json:"amount_cents"`
}

// Authorization is the output of Authorize.
type Authorization struct {
	ID           string `json:"id"`
	Account      string `json:"account"`
	AmountCents  int64  `json:"amount_cents"`
	BalanceCents int64  `json:"balance_cents"` // before the charge
}

// CaptureRequest is the input of Capture.
type CaptureRequest struct {
	AuthorizationID  string `json:"authorization_id"`
	AmountCents      int64  `json:"amount_cents"`
	ProviderFailures int    `json:"provider_failures,omitempty"` // see ChargeRequest
}

// CaptureResult is the output of Capture: the provider's acceptance.
type CaptureResult struct {
	ID              string `json:"id"`
	AuthorizationID string `json:"authorization_id"`
	AmountCents     int64  `json:"amount_cents"`
	Attempt         int    `json:"attempt"` // the attempt the provider accepted, from 1
}

// Receipt is the output of Charge.
type Receipt struct {
	Account         string `json:"account"`
	AmountCents     int64  `json:"amount_cents"`
	AuthorizationID string `json:"authorization_id"`
	CaptureID       string `json:"capture_id"`
	CaptureAttempt  int    `json:"capture_attempt"` // the attempt of the capture that succeeded
}

// InsufficientFunds is the details of an insufficient_funds error.
type InsufficientFunds struct {
	Account      string `json:"account"`
	BalanceCents int64  `json:"balance_cents"`
	AmountCents  int64  `json:"amount_cents"`
}

// ProviderRefusal is the details of a provider_unavailable error.
type ProviderRefusal struct {
	Attempt int `json:"attempt"`
}

func authorize(ctx context.Context, in AuthorizeRequest) (Authorization, error) {
	if in.AmountCents <= 0 {
		return Authorization{}, atasks.NewError(atasks.ErrBadInput.Code, "amount_cents must be positive", nil)
	}
	balance, ok := balances[in.Account]
	if !ok {
		return Authorization{}, atasks.NewError(CodeUnknownAccount, fmt.Sprintf("no account %q", in.Account), nil)
	}
	if balance < in.AmountCents {
		return Authorization{}, atasks.NewError(CodeInsufficientFunds,
			fmt.Sprintf("balance is %d, the charge %d", balance, in.AmountCents),
			InsufficientFunds{Account: in.Account, BalanceCents: balance, AmountCents: in.AmountCents})
	}
	inv, _ := atasks.InvocationFrom(ctx)
	return Authorization{ID: "auth_" + inv.ID, Account: in.Account, AmountCents: in.AmountCents, BalanceCents: balance}, nil
}

func capture(ctx context.Context, in CaptureRequest) (CaptureResult, error) {
	inv, _ := atasks.InvocationFrom(ctx)
	if inv.Attempt <= in.ProviderFailures {
		err := atasks.NewError(CodeProviderUnavailable, fmt.Sprintf("the provider refused attempt %d", inv.Attempt),
			ProviderRefusal{Attempt: inv.Attempt})
		err.Retryable = true // Capture's retry policy runs it again
		return CaptureResult{}, err
	}
	return CaptureResult{ID: "cap_" + inv.ID, AuthorizationID: in.AuthorizationID, AmountCents: in.AmountCents, Attempt: inv.Attempt}, nil
}

func charge(ctx context.Context, in ChargeRequest) (Receipt, error) {
	auth, err := Authorize.Call(ctx, AuthorizeRequest{Account: in.Account, AmountCents: in.AmountCents})
	if err != nil {
		return Receipt{}, err // the child's *atasks.Error, code and details intact
	}
	capt, err := Capture.Call(ctx, CaptureRequest{AuthorizationID: auth.ID, AmountCents: in.AmountCents, ProviderFailures: in.ProviderFailures})
	if err != nil {
		return Receipt{}, err
	}
	return Receipt{Account: in.Account, AmountCents: in.AmountCents, AuthorizationID: auth.ID,
		CaptureID: capt.ID, CaptureAttempt: capt.Attempt}, nil
}

func chargeAll(ctx context.Context, in []ChargeRequest) ([]Receipt, error) {
	fs := make([]*atasks.Future[Receipt], len(in))
	for i, r := range in {
		fs[i] = Charge.Start(ctx, r) // sent at once, awaited below
	}
	return atasks.WaitAll(ctx, fs, atasks.CancelOnError())
}
