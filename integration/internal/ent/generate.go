// Package ent is a generated ent client for the ORM smoke test in package
// integration. Regenerate it after changing schema/ with `go generate ./integration/...`;
// the generator runs at a pinned version outside this module's dependencies.
package ent

//go:generate go run entgo.io/ent/cmd/ent@v0.14.5 generate ./schema
