package upgradertest_test

import (
	"testing"

	"github.com/batonhq/baton/upgrader/upgradertest"
)

func TestParseLine(t *testing.T) {
	tests := []struct {
		line           string
		msg, key, want string
		pid            int
	}{
		{
			line: `time=2026-11-25T22:19:16.587Z level=INFO msg=serving pid=1836 generation=0 addr=127.0.0.1:43393 version=dev`,
			msg:  "serving", pid: 1836, key: "addr", want: "127.0.0.1:43393",
		},
		{
			line: `time=x level=ERROR msg="upgrade failed: still serving" pid=7 generation=0 err="parent hasn't exited"`,
			msg:  "upgrade failed: still serving", pid: 7, key: "err", want: "parent hasn't exited",
		},
		{
			// A repeated key keeps its first value, as the pid does.
			line: `time=x level=INFO msg="state restored" pid=9 upgrade=1-1 generation=1 upgrade=2-1 bytes=49478 took=7.230328ms`,
			msg:  "state restored", pid: 9, key: "upgrade", want: "1-1",
		},
	}
	for _, tt := range tests {
		l := upgradertest.ParseLine(tt.line)
		if l.Msg != tt.msg || l.Pid != tt.pid || l.Fields[tt.key] != tt.want {
			t.Errorf("ParseLine(%q) = msg %q pid %d %s=%q; want %q %d %q", tt.line, l.Msg, l.Pid, tt.key, l.Fields[tt.key], tt.msg, tt.pid, tt.want)
		}
	}
}
