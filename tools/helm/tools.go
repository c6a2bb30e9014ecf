//go:build tools

// Package tools records, for `go mod tidy`, the package tools/build.sh builds from this module.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
