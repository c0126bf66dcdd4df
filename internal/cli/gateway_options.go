package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/gateway"
	"github.com/prometheus/client_golang/prometheus"
)

// options are the gateway's flags; each has an ATASKS_… environment
// variable. The tokens themselves come only from a file or the
// environment: a command line shows in ps.
type options struct {
	listen, amqpURL, identity, prefix, allowedOrigins, namespaces *string
	concurrency, maxBody, maxFinished, maxUnfinished, wsMaxCalls  *int
	maxPerCaller                                                  *int
	allowedHosts                                                  *string
	wait, maxWait, retention, drain                               *time.Duration
	tokensFile, maxBodyNS, tlsCert, tlsKey                        *string
	insecure, history                                             *bool
	historyMaxAge                                                 *time.Duration
	historyMaxBytes                                               *int
	rateLimit                                                     *float64
	rateBurst, maxInFlight                                        *int
	readHeaderTimeout, readTimeout, writeTimeout, idleTimeout     *time.Duration

	logger  func() (*slog.Logger, error)
	tracing func() (func(context.Context) error, error)
	// brokerTLS configures amqps:// (--amqp-ca, --amqp-cert, --amqp-key).
	brokerTLS func() (*tls.Config, error)
	cert      *tls.Certificate // loaded by security
}

// defineFlags defines the gateway's flags on f.
func defineFlags(f Flags) *options {
	o := &options{
		listen:          f.String("listen", "ATASKS_LISTEN", "127.0.0.1:8080", "address to serve HTTP on; beyond loopback, tokens or --insecure are needed"),
		amqpURL:         f.String("amqp-url", "ATASKS_AMQP_URL", "", "RabbitMQ URL; empty runs the demo tasks in-process (embedded mode)"),
		identity:        f.String("identity", "ATASKS_IDENTITY", "", "stable id of this gateway on the broker: results that arrive while it is down wait for it to come back with the same id; empty is a random id"),
		history:         f.Bool("history", "ATASKS_HISTORY", false, "keep every invocation in the namespace's history on the broker, shared by gateway replicas: any replica (or one started afresh) answers for any invocation in it; needs --amqp-url"),
		historyMaxAge:   f.Duration("history-max-age", "ATASKS_HISTORY_MAX_AGE", time.Hour, "with --history: how long the broker keeps the history (all replicas must agree)"),
		historyMaxBytes: f.Int("history-max-bytes", "ATASKS_HISTORY_MAX_BYTES", 1<<30, "with --history: how many bytes of history the broker keeps at most (all replicas must agree)"),
		prefix:          f.String("prefix", "ATASKS_PREFIX", "atasks", "first part of every exchange and queue name on the broker"),
		namespaces:      f.String("namespaces", "ATASKS_NAMESPACES", "", "comma-separated namespaces to front; empty fronts those this program defines tasks in (or default)"),
		concurrency:     f.Int("concurrency", "ATASKS_CONCURRENCY", 1000, "embedded mode: how many tasks compute at once"),
		maxBody:         f.Int("max-body", "ATASKS_MAX_BODY", 1<<20, "largest request body in bytes"),
		wait:            f.Duration("wait", "ATASKS_WAIT", 10*time.Second, "how long an invoke waits for the outcome by default"),
		maxWait:         f.Duration("max-wait", "ATASKS_MAX_WAIT", 60*time.Second, "cap on ?wait="),
		retention:       f.Duration("retention", "ATASKS_RETENTION", 10*time.Minute, "how long finished invocations stay readable"),
		maxFinished:     f.Int("max-finished", "ATASKS_MAX_FINISHED", 100_000, "how many finished invocations are kept at most, oldest evicted first"),
		maxUnfinished:   f.Int("max-unfinished", "ATASKS_MAX_UNFINISHED", 100_000, "how many unfinished (queued or running) invocations the gateway tracks at most; beyond, new calls get 503 too_many_invocations"),
		maxPerCaller:    f.Int("max-unfinished-per-caller", "ATASKS_MAX_UNFINISHED_PER_CALLER", 10_000, "how many unfinished invocations one token (one client IP without tokens) may have started; beyond, its calls get 429; -1 is no cap"),
		allowedHosts:    f.String("allowed-hosts", "ATASKS_ALLOWED_HOSTS", "", "comma-separated Host names a gateway without tokens answers besides loopback ones (against DNS rebinding); * for any"),
		allowedOrigins:  f.String("allowed-origins", "ATASKS_ALLOWED_ORIGINS", "", "comma-separated origins (e.g. https://app.example.com) whose pages may open WebSockets besides the gateway's own host; * for any"),
		wsMaxCalls:      f.Int("ws-max-calls", "ATASKS_WS_MAX_CALLS", 1000, "how many calls and subscriptions one WebSocket may have open"),
		drain:           f.Duration("drain", "ATASKS_DRAIN", 30*time.Second, "on SIGINT/SIGTERM, how long running work may take to finish"),

		tokensFile:        f.String("tokens", "ATASKS_TOKENS_FILE", "", "file of bearer tokens' hashes and rights, one a line: NAME sha256:HEX NS:RIGHTS,…; $ATASKS_TOKENS adds TOKEN=NS:RIGHTS entries"),
		insecure:          f.Bool("insecure", "ATASKS_INSECURE", false, "serve without tokens on an address beyond loopback: anyone who reaches it may do anything"),
		rateLimit:         f.Float64("rate-limit", "ATASKS_RATE_LIMIT", 0, "API requests per second per token (per client IP without tokens), WebSocket calls included; 0 is no limit"),
		rateBurst:         f.Int("rate-burst", "ATASKS_RATE_BURST", 0, "requests a token may make at once within --rate-limit; 0 is a second's worth"),
		maxInFlight:       f.Int("max-in-flight", "ATASKS_MAX_IN_FLIGHT", 1000, "API requests per token (per client IP without tokens) in progress at once, long-polls and WebSockets included; 0 is no cap"),
		maxBodyNS:         f.String("max-body-ns", "ATASKS_MAX_BODY_NS", "", "per-namespace overrides of --max-body: NS=BYTES,…"),
		readHeaderTimeout: f.Duration("read-header-timeout", "ATASKS_READ_HEADER_TIMEOUT", 5*time.Second, "how long a client may take to send a request's headers"),
		readTimeout:       f.Duration("read-timeout", "ATASKS_READ_TIMEOUT", 30*time.Second, "how long a client may take to send a whole request, body included"),
		writeTimeout:      f.Duration("write-timeout", "ATASKS_WRITE_TIMEOUT", 30*time.Second, "how long an answer may take, after any wait the request asked for (long-polls)"),
		idleTimeout:       f.Duration("idle-timeout", "ATASKS_IDLE_TIMEOUT", 2*time.Minute, "how long a keep-alive connection may stay idle"),
		tlsCert:           f.String("tls-cert", "ATASKS_TLS_CERT", "", "PEM certificate (chain) file: serve HTTPS and wss; needs --tls-key"),
		tlsKey:            f.String("tls-key", "ATASKS_TLS_KEY", "", "PEM private key file of --tls-cert"),
	}
	o.logger = f.Logging()
	o.tracing = f.Tracing("atasks-gateway")
	o.brokerTLS = f.BrokerTLS()
	return o
}

// security loads the tokens and the TLS certificate, and refuses to serve
// an address beyond loopback open to everyone unless --insecure.
func (o *options) security() ([]gateway.Token, error) {
	tokens, err := loadTokens(*o.tokensFile)
	if err != nil {
		return nil, err
	}
	if err := checkExposure(*o.listen, len(tokens), *o.insecure); err != nil {
		return nil, err
	}
	if (*o.tlsCert == "") != (*o.tlsKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if *o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(*o.tlsCert, *o.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert, --tls-key: %w", err)
		}
		o.cert = &cert
	}
	return tokens, nil
}

// gatewayConfig is the gateway's configuration from o.
func (o *options) gatewayConfig(client *atasks.Client, reg *prometheus.Registry, tokens []gateway.Token, log *slog.Logger) (gateway.Config, error) {
	bodies, err := parseBodyLimits(*o.maxBodyNS)
	if err != nil {
		return gateway.Config{}, err
	}
	return gateway.Config{Client: client, MaxBody: int64(*o.maxBody), DefaultWait: *o.wait, MaxWait: *o.maxWait,
		Retention: *o.retention, MaxFinished: *o.maxFinished, MaxUnfinished: *o.maxUnfinished, MaxUnfinishedPerCaller: *o.maxPerCaller, AllowedHosts: o.hosts(), DurableReplies: *o.identity != "",
		AllowedOrigins: List(*o.allowedOrigins), WSMaxCalls: *o.wsMaxCalls, Metrics: reg,
		Tokens: tokens, RateLimit: *o.rateLimit, RateBurst: *o.rateBurst, MaxInFlight: *o.maxInFlight,
		MaxBodyNS: bodies, WriteTimeout: *o.writeTimeout, Logger: log}, nil
}

// hosts is --allowed-hosts, with every host when --insecure opens the
// gateway to all on purpose.
func (o *options) hosts() []string {
	hosts := List(*o.allowedHosts)
	if *o.insecure {
		hosts = append(hosts, "*")
	}
	return hosts
}

// fronted returns the namespaces the gateway fronts: --namespaces, else
// those the program defines tasks in, else the default one.
func (o *options) fronted() []string {
	if nss := List(*o.namespaces); len(nss) > 0 {
		return nss
	}
	if nss := atasks.DefaultRegistry().Namespaces(); len(nss) > 0 {
		return nss
	}
	return []string{atasks.DefaultNamespace}
}

// loadTokens reads the tokens of file, if any, and of $ATASKS_TOKENS.
func loadTokens(file string) ([]gateway.Token, error) {
	var tokens []gateway.Token
	if file != "" {
		fh, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("--tokens: %w", err)
		}
		defer fh.Close()
		if tokens, err = gateway.ParseTokens(fh); err != nil {
			return nil, fmt.Errorf("--tokens %s: %w", file, err)
		}
	}
	env, err := gateway.ParseTokenList(os.Getenv("ATASKS_TOKENS"))
	if err != nil {
		return nil, fmt.Errorf("$ATASKS_TOKENS: %w", err)
	}
	return append(tokens, env...), nil
}

// checkExposure refuses to serve listen with no tokens, open to everyone,
// unless it is a loopback address or insecure says so.
func checkExposure(listen string, tokens int, insecure bool) error {
	if tokens > 0 || insecure {
		return nil
	}
	local, err := loopback(listen)
	if err != nil || local {
		return err
	}
	return fmt.Errorf("refusing to serve %s without tokens: anyone who reaches it could invoke, read and cancel every task. "+
		"Give tokens (--tokens FILE or $ATASKS_TOKENS; README, \"Security and limits\"), listen on 127.0.0.1, or pass --insecure to serve it open anyway", listen)
}

// loopback tells whether listen, host:port, names loopback addresses only.
func loopback(listen string) (bool, error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false, fmt.Errorf("--listen: %w", err)
	}
	if host == "" {
		return false, nil // every interface
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback(), nil
	}
	ips, err := net.DefaultResolver.LookupIP(context.Background(), "ip", host)
	if err != nil {
		return false, fmt.Errorf("--listen: %w", err)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false, nil
		}
	}
	return len(ips) > 0, nil
}

// parseBodyLimits parses --max-body-ns: NS=BYTES entries separated by commas.
func parseBodyLimits(list string) (map[string]int64, error) {
	limits := map[string]int64{}
	for e := range strings.SplitSeq(list, ",") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		at := strings.LastIndexByte(e, '=')
		n, err := strconv.ParseInt(e[at+1:], 10, 64)
		if at <= 0 || err != nil || n <= 0 {
			return nil, fmt.Errorf("--max-body-ns: %q is not NAMESPACE=BYTES with BYTES > 0", e)
		}
		limits[e[:at]] = n
	}
	return limits, nil
}

// hashToken prints the hash of the token it reads from in (one line; the
// line break is not part of it), as a tokens file wants it.
func hashToken(in io.Reader, out io.Writer) error {
	b, err := io.ReadAll(io.LimitReader(in, 4096))
	if err != nil {
		return err
	}
	token := strings.TrimRight(string(b), "\r\n")
	if token == "" || strings.ContainsAny(token, "\r\n") {
		return errors.New("hash-token: give one token, on one line, on standard input")
	}
	if strings.TrimSpace(token) != token {
		return errors.New("hash-token: the token starts or ends with white space, which no client sends: give the token alone")
	}
	_, err = fmt.Fprintln(out, gateway.FormatHash(gateway.HashToken(token)))
	return err
}
