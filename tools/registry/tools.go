//go:build tools

// Package tools records, for `go mod tidy`, the package tools/build.sh builds from this module.
package tools

import _ "github.com/distribution/distribution/v3/cmd/registry"
