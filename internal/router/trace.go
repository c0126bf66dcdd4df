package router

import (
	"context"

	"github.com/atasks-go/atasks/wire"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// traceContext carries spans across the wire as a W3C traceparent.
var traceContext = propagation.TraceContext{}

// startCallSpan starts the caller's span of req, a child of ctx's span, and
// sets req.TraceParent so that the server's span becomes its child.
func (r *Router) startCallSpan(ctx context.Context, req *wire.Request) trace.Span {
	ctx, span := r.cfg.Tracer.Start(ctx, "call "+req.Task, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(r.spanAttributes(req)...)
	}
	if span.SpanContext().IsValid() {
		carrier := propagation.MapCarrier{}
		traceContext.Inject(ctx, carrier)
		req.TraceParent = carrier.Get("traceparent")
	}
	return span
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
