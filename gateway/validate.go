package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/atasks-go/atasks/api"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// validator checks requests against the API's OpenAPI document, api.Spec.
type validator struct {
	routes  routers.Router
	options openapi3filter.Options
}

func newValidator() (*validator, error) {
	doc, err := api.Load()
	if err != nil {
		return nil, fmt.Errorf("gateway: load the OpenAPI document: %w", err)
	}
	routes, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("gateway: route the OpenAPI document: %w", err)
	}
	v := &validator{routes: routes, options: openapi3filter.Options{
		// Task inputs are any JSON; the handler reads them (malformed_json)
		// and the task decides whether they fit.
		ExcludeRequestBody: true,
		// Defaults such as ?wait= come from the gateway's Config.
		SkipSettingDefaults: true,
		// The guard authenticates (auth.go) before the document is checked.
		AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
	}}
	v.options.WithCustomSchemaErrorFunc(schemaMessage)
	return v, nil
}

// check reads r's body if its operation, route, takes one (413 beyond
// limit), then checks its parameters and headers (400 naming the
// offender); it reports whether r passed, having answered it otherwise.
func (v *validator) check(w http.ResponseWriter, r *http.Request, route *routers.Route, params map[string]string, limit int64) bool {
	if route.Operation.RequestBody != nil {
		body, err := readBody(w, r, limit)
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			writeProblem(w, codeBodyTooLarge, fmt.Sprintf("the body exceeds %d bytes", limit))
			return false
		case err != nil:
			writeProblem(w, codeBadRequest, "reading the body: "+err.Error())
			return false
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	if nothingToCheck(r, route) {
		return true
	}
	in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: &v.options}
	if err := openapi3filter.ValidateRequest(r.Context(), in); err != nil {
		writeProblem(w, codeBadRequest, requestProblem(err))
		return false
	}
	return true
}

// nothingToCheck reports whether r has nothing its operation, route,
// declares beyond path parameters, which the router matched already (the
// document wants them non-empty, as the router does): no query, none of
// its header parameters. Most calls are such, and skip the document's
// checks then.
func nothingToCheck(r *http.Request, route *routers.Route) bool {
	if r.URL.RawQuery != "" {
		return false
	}
	for _, p := range route.Operation.Parameters {
		if p.Value != nil && p.Value.In != "path" && (p.Value.In != "header" || r.Header.Get(p.Value.Name) != "") {
			return false
		}
	}
	for _, p := range route.PathItem.Parameters {
		if p.Value != nil && p.Value.In != "path" {
			return false
		}
	}
	return true
}

// requestProblem describes a validation error for a problem's detail,
// naming the parameter or header at fault.
func requestProblem(err error) string {
	var re *openapi3filter.RequestError
	if !errors.As(err, &re) || re.Parameter == nil {
		return err.Error()
	}
	reason := re.Reason
	if re.Err != nil {
		reason = re.Err.Error()
	}
	return fmt.Sprintf("%s parameter %q: %s", re.Parameter.In, re.Parameter.Name, reason)
}

// schemaMessage words a schema violation for a problem's detail: a value
// that misses a titled pattern "is not a <title>", the rest as kin-openapi
// says it, without the schema.
func schemaMessage(err *openapi3.SchemaError) string {
	if err.SchemaField == "pattern" && err.Schema.Title != "" {
		msg := fmt.Sprintf("%q is not a %s", fmt.Sprint(err.Value), err.Schema.Title)
		if err.Schema.Example != nil {
			msg += fmt.Sprintf(" (e.g. %v)", err.Schema.Example)
		}
		return msg
	}
	return err.Reason
}
