// Package cli holds what the two binaries share: flags that fall back to
// environment variables, logging set-up, and the demo client they build.
package cli

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"
)

// Flags wraps a FlagSet whose every flag defaults to an environment variable.
type Flags struct{ *flag.FlagSet }

// NewFlags returns flags for the program called name, described by about.
func NewFlags(name, about string) Flags {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\n\nUsage: %s [flags]\n\nEvery flag can also be set by the environment variable named after it.\n\n", about, name)
		fs.PrintDefaults()
	}
	return Flags{fs}
}

// String defines a string flag defaulting to $env, else def.
func (f Flags) String(name, env, def, usage string) *string {
	if v, ok := os.LookupEnv(env); ok {
		def = v
	}
	return f.FlagSet.String(name, def, usage+" ($"+env+")")
}

// Int defines an int flag defaulting to $env, else def.
func (f Flags) Int(name, env string, def int, usage string) *int {
	if s, ok := os.LookupEnv(env); ok {
		def = fromEnv(env, s, strconv.Atoi)
	}
	return f.FlagSet.Int(name, def, usage+" ($"+env+")")
}

// Duration defines a duration flag defaulting to $env, else def.
func (f Flags) Duration(name, env string, def time.Duration, usage string) *time.Duration {
	if s, ok := os.LookupEnv(env); ok {
		def = fromEnv(env, s, time.ParseDuration)
	}
	return f.FlagSet.Duration(name, def, usage+" ($"+env+")")
}

// Float64 defines a float64 flag defaulting to $env, else def.
func (f Flags) Float64(name, env string, def float64, usage string) *float64 {
	if s, ok := os.LookupEnv(env); ok {
		def = fromEnv(env, s, func(s string) (float64, error) { return strconv.ParseFloat(s, 64) })
	}
	return f.FlagSet.Float64(name, def, usage+" ($"+env+")")
}

// Bool defines a bool flag defaulting to $env (true, 1, false, 0, …), else def.
func (f Flags) Bool(name, env string, def bool, usage string) *bool {
	if s, ok := os.LookupEnv(env); ok {
		def = fromEnv(env, s, strconv.ParseBool)
	}
	return f.FlagSet.Bool(name, def, usage+" ($"+env+")")
}

// fromEnv parses environment variable env's value s, exiting with status 2,
// as a bad flag does, if it does not parse.
func fromEnv[T any](env, s string, parse func(string) (T, error)) T {
	v, err := parse(s)
	if err != nil {
		fmt.Fprintf(os.Stderr, "invalid value %q for $%s: %v\n", s, env, err)
		os.Exit(2)
	}
	return v
}

// Logging adds --log-level and --log-format to f; the function it returns
// builds the logger they describe, once f is parsed.
func (f Flags) Logging() func() (*slog.Logger, error) {
	level := f.String("log-level", "ATASKS_LOG_LEVEL", "info", "debug, info, warn or error")
	format := f.String("log-format", "ATASKS_LOG_FORMAT", "text", "text (logfmt) or json, one object per line")
	return func() (*slog.Logger, error) { return Logger(*format, *level) }
}

// Logger returns a logger on stderr in format ("text" or "json") at level
// ("debug", "info", "warn", "error").
func Logger(format, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// WorkerName names this process in the states it reports: host:pid.
func WorkerName() string {
	host, _ := os.Hostname()
	return host + ":" + strconv.Itoa(os.Getpid())
}
