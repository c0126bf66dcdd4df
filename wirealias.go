package atasks

import (
	"github.com/atasks-go/atasks/internal/codec"
	"github.com/atasks-go/atasks/internal/transport/loopback"
	"github.com/atasks-go/atasks/wire"
)

// Codec encodes task inputs and outputs; see wire.Codec. Implement it to
// bring your own encoding and name it in NamespaceConfig.
type Codec = wire.Codec

// Transport carries requests and replies between processes; see wire.Transport.
type Transport = wire.Transport

// State is where an invocation is in its life: scheduled (a delayed call,
// see After), queued, running, succeeded, failed, cancelled or timed_out.
type State = wire.State

// Activity is a worker's report of an invocation it runs, as Client.Watch
// passes it on; see wire.Activity.
type Activity = wire.Activity

// ServerInfo is one serving process of a namespace, with the tasks it
// serves and its compute slots; see wire.ServerInfo.
type ServerInfo = wire.ServerInfo

// JSON returns the JSON codec, the default: every language speaks it.
func JSON() Codec { return codec.JSON{} }

// CBOR returns the CBOR (RFC 8949) codec: compact and binary.
func CBOR() Codec { return codec.CBOR{} }

// Loopback returns an in-process transport: tasks run in the process that
// calls them. For tests and single-process programs.
func Loopback() Transport { return loopback.New() }
