package tests

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batonhq/baton/tests/demotest"
)

// TestAlertRulesPromtool loads contrib/prometheus/alerts.yml with Debian's
// promtool, as Prometheus would, and runs its unit tests
// (alerts_test.yml): the failure and rollback alerts fire for the instance
// whose counter moved, with their labels and annotations, and not before.
func TestAlertRulesPromtool(t *testing.T) {
	promtool := needTool(t, "promtool", "prometheus")
	dir := filepath.Join(demotest.Root(), "contrib", "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
