package demo

import "github.com/atasks-go/atasks"

// Namespaces returns the configuration of the demo namespaces, "default" and
// "seed", each with the transport newTransport makes for it (nil: loopback).
func Namespaces(newTransport func(ns string) (atasks.Transport, error)) ([]atasks.NamespaceConfig, error) {
	var nss []atasks.NamespaceConfig
	for _, ns := range []string{atasks.DefaultNamespace, SeedNamespace} {
		nc := atasks.NamespaceConfig{Name: ns}
		if newTransport != nil {
			t, err := newTransport(ns)
			if err != nil {
				return nil, err
			}
			nc.Transport = t
		}
		nss = append(nss, nc)
	}
	return nss, nil
}
