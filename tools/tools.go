//go:build tools

// Package tools pins the Go-built developer tools (see dev/tools.sh).
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
