// Package api holds the contract of the atasks gateway's HTTP API: the
// OpenAPI 3.0 document openapi.yaml, which the gateway serves at
// /v1/openapi.yaml and validates requests against.
package api

import (
	_ "embed"

	"github.com/getkin/kin-openapi/openapi3"
)

// Spec is openapi.yaml, the OpenAPI document of the gateway. Do not modify it.
//
//go:embed openapi.yaml
var Spec []byte

// Load parses Spec into a new document, which the caller may keep and use
// concurrently for routing and validation. The package's tests validate
// Spec, so Load fails only if memory is corrupt.
func Load() (*openapi3.T, error) {
	return openapi3.NewLoader().LoadFromData(Spec)
}
