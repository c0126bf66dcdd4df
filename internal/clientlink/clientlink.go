// Package clientlink lets the gateway, which is machinery, reach the
// router and codecs behind a public *atasks.Client without making them
// public API: package atasks sets Namespace when it is initialised.
package clientlink

import (
	"github.com/atasks-go/atasks/internal/codec"
	"github.com/atasks-go/atasks/internal/router"
	"github.com/atasks-go/atasks/wire"
)

// Namespace returns the router of namespace ns of client, an
// *atasks.Client, the codec its calls encode inputs with and the codecs it
// decodes with; an error with code "namespace_not_found" if the client has
// no namespace ns.
var Namespace func(client any, ns string) (*router.Router, wire.Codec, *codec.Registry, error)
