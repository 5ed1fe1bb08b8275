//go:build !batonfault

package fault

// Inject does nothing: this build has no fault injection.
func Inject(step Step, gen, attempt int) {}

// Rejects reports false: this build has no fault injection.
func Rejects(gen, attempt int) bool { return false }

// HealthFails reports false: this build has no fault injection.
func HealthFails(gen, attempt int) bool { return false }
