//go:build !batonfault

package fault

import "testing"

// TestOffBuildInjectsNothing: without the batonfault tag a named fault
// changes nothing: the process goes on and keeps the state.
func TestOffBuildInjectsNothing(t *testing.T) {
	t.Setenv(EnvVar, "new-start@0.0,new-reject@0.0")
	Inject(NewStart, 0, 0)
	if Rejects(0, 0) {
		t.Error("Rejects is true in a build without batonfault")
	}
}
