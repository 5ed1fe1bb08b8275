package fault

import (
	"strings"
	"testing"
)

func TestEnvAndHas(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		step    Step
		gen     int
		attempt int
		want    bool
	}{
		{name: "the entry Env makes", value: strings.TrimPrefix(Env(NewReject, 1, 2), EnvVar+"="), step: NewReject, gen: 1, attempt: 2, want: true},
		{name: "one of a list", value: "new-start@2.1,old-kill@0.1", step: OldKill, gen: 0, attempt: 1, want: true},
		{name: "other generation", value: "old-kill@0.1", step: OldKill, gen: 1, attempt: 1},
		{name: "other attempt", value: "new-hang@1.1", step: NewHang, gen: 1, attempt: 2},
		{name: "other step", value: "new-hang@1.1", step: NewCrashLate, gen: 1, attempt: 1},
		{name: "a prefix is not a match", value: "new-start@1.10", step: NewStart, gen: 1, attempt: 1},
		{name: "empty", value: "", step: NewStart, gen: 0, attempt: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Has(tt.value, tt.step, tt.gen, tt.attempt); got != tt.want {
				t.Errorf("Has(%q, %s, %d, %d) = %v, want %v", tt.value, tt.step, tt.gen, tt.attempt, got, tt.want)
			}
		})
	}
	if got, want := Env(NewRestoring, 1, 1), "BATON_FAULT=new-restoring@1.1"; got != want {
		t.Errorf("Env = %q, want %q", got, want)
	}
}
