package router

import (
	"context"
	"crypto/rand"

	"github.com/atasks-go/atasks/wire"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// traceContext carries spans across the wire as a W3C traceparent.
var traceContext = propagation.TraceContext{}

// startCallSpan starts the caller's span of req, a child of ctx's span, and
// sets req.TraceParent (W3C) so that the server's span becomes its child.
func (r *Router) startCallSpan(ctx context.Context, req *wire.Request) trace.Span {
	_, span := r.cfg.Tracer.Start(ctx, "call "+req.Task, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(r.spanAttributes(req)...)
	}
	sc := span.SpanContext()
	if !sc.IsValid() {
		// No tracing here or upstream: a trace id of its own, not sampled,
		// still ties the invocation's log lines together across processes.
		sc = trace.NewSpanContext(trace.SpanContextConfig{TraceID: newTraceID(), SpanID: newSpanID()})
	}
	req.TraceParent = "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
	return span
}

func newTraceID() (id trace.TraceID) {
	_, _ = rand.Read(id[:])
	return id
}

func newSpanID() (id trace.SpanID) {
	_, _ = rand.Read(id[:])
	return id
}

// startRunSpan starts the server's span of req, a child of the caller's
// span that req.TraceParent names, and returns ctx carrying it.
func (r *Router) startRunSpan(ctx context.Context, req *wire.Request) (context.Context, trace.Span) {
	if req.TraceParent != "" {
		ctx = traceContext.Extract(ctx, propagation.MapCarrier{"traceparent": req.TraceParent})
	}
	ctx, span := r.cfg.Tracer.Start(ctx, "run "+req.Task, trace.WithSpanKind(trace.SpanKindServer))
	if span.IsRecording() {
		span.SetAttributes(append(r.spanAttributes(req), attribute.Int("atasks.attempt", req.Attempt))...)
	}
	return ctx, span
}

func (r *Router) spanAttributes(req *wire.Request) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("atasks.ns", r.cfg.NS),
		attribute.String("atasks.task", req.Task),
		attribute.String("atasks.invocation_id", req.ID),
		attribute.String("atasks.parent_id", req.Parent),
	}
}

// endSpan ends span with rep's outcome.
func endSpan(span trace.Span, rep *wire.Reply) {
	if !span.IsRecording() {
		span.End()
		return
	}
	span.SetAttributes(attribute.String("atasks.state", string(rep.State)))
	if rep.Worker != "" {
		span.SetAttributes(attribute.String("atasks.worker", rep.Worker))
	}
	if rep.Err != nil {
		span.SetAttributes(attribute.String("atasks.error_code", rep.Err.Code))
		span.SetStatus(codes.Error, rep.Err.Code+": "+rep.Err.Message)
	}
	span.End()
}
