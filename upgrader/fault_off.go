//go:build !batonfault

package upgrader

func fault(step string, gen, attempt int) {}

func faultRejects(gen, attempt int) bool { return false }
