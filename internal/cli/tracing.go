package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Tracing adds --otlp-endpoint to f; the function it returns, once f is
// parsed, starts exporting the process's spans over OTLP/HTTP when an
// endpoint is set (else tracing stays off, at no cost) and returns the
// function that flushes and stops the export.
func (f Flags) Tracing(service string) func() (func(context.Context) error, error) {
	endpoint := f.String("otlp-endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT", "",
		"OpenTelemetry collector to export traces to over OTLP/HTTP, e.g. http://127.0.0.1:4318; empty exports none")
	return func() (func(context.Context) error, error) { return StartTracing(service, *endpoint) }
}

// StartTracing exports spans of service to the OTLP/HTTP collector at
// endpoint (its base URL; /v1/traces is added unless present) through the
// global tracer provider. With no endpoint it does nothing.
func StartTracing(service, endpoint string) (func(context.Context) error, error) {
	if endpoint == "" {
		return func(context.Context) error { return nil }, nil
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("--otlp-endpoint %q: want a URL such as http://127.0.0.1:4318", endpoint)
	}
	if !strings.HasSuffix(u.Path, "/v1/traces") {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
	}
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(u.String()))
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(service))))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	return tp.Shutdown, nil
}

// FlushTraces exports the spans not yet exported, for up to 5 s.
func FlushTraces(stop func(context.Context) error, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := stop(ctx); err != nil {
		log.Warn("flushing traces", "err", err)
	}
}
