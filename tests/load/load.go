// Package load is the load generator of upgradertest under older names.
// Only tests/systemd_test.go still imports it; once it uses upgradertest's
// names (LoadReport, Refused) this package goes.
package load

import (
	"context"

	"github.com/batonhq/baton/upgrader/upgradertest"
)

// Config describes the load; see upgradertest.LoadConfig.
type Config = upgradertest.LoadConfig

// Report is what the clients saw; see upgradertest.LoadReport.
type Report = upgradertest.LoadReport

// Sample is one request's outcome.
type Sample = upgradertest.Sample

// Failure kinds, the keys of Report.Failures.
const (
	Refused = upgradertest.Refused
	Reset   = upgradertest.Reset
	EOF     = upgradertest.EOF
	Timeout = upgradertest.Timeout
	Status  = upgradertest.Status
	Body    = upgradertest.Body
	Other   = upgradertest.Other
)

// Run sends requests until ctx is done; see upgradertest.RunLoad.
func Run(ctx context.Context, cfg Config) *Report { return upgradertest.RunLoad(ctx, cfg) }
