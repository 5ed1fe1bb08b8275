package upgrader

// Bad input at the process boundary: fuzz targets for what a new process
// reads from its environment and its parent (BATON_HANDOFF, handoff
// messages) and for what the control socket reads from a client. The unit
// tests that play a parent sending garbage on a real handoff socket are in
// handoff_new_test.go. The seed corpora live in testdata/fuzz; run a target
// longer with, e.g.,
//
//	go test ./upgrader -run '^$' -fuzz FuzzDecodeMessage -fuzztime 2m

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/batonhq/baton/state"
)

func FuzzDecodeMessage(f *testing.F) {
	accepts := state.Accepts{Formats: []uint16{1}, Sections: map[string][]uint32{"demo.kv": {1, 2}}}
	preCopy := state.Accepts{Formats: []uint16{1}, Sections: map[string][]uint32{"worker.tasks": {1}}, PreCopy: []string{"worker.tasks"}}
	for _, m := range []message{
		{Type: msgHello, Pid: 42, Attempt: 1},
		{Type: msgStateRequest, Accepts: &accepts},
		{Type: msgStateRequest, Accepts: &preCopy},
		{Type: msgPreState},
		{Type: msgPreRestored, Attempt: 1, Round: 1},
		{Type: msgPreState, Round: 2},
		{Type: msgState},
		{Type: msgNoState},
		{Type: msgRefused, Reason: "the new binary cannot read this process's state"},
		{Type: msgRestored},
		{Type: msgRejected, Reason: "receive snapshot: unexpected EOF"},
		{Type: msgFinal, Counters: map[string]uint64{"demo.hits": 7}},
	} {
		b, err := encodeMessage(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{``, `{}`, `null`, `[]`, `{"v":2,"type":"hello"}`, `{"v":1,"type":""}`,
		`{"v":1,"type":"hello","pid":1e100}`, `{"v":1,"type":"final","counters":{"a":-1}}`,
		`{"v":1,"type":"state-request","accepts":{"formats":[70000]}}`,
		`{"v":1,"type":"state-request","accepts":{"formats":[1],"pre_copy":[""]}}`, "{\"v\":1,\"type\":\"\xff\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			if !errors.Is(err, ErrHandshake) {
				t.Fatalf("decodeMessage error %v does not wrap ErrHandshake", err)
			}
			return
		}
		if m.Version != handoffVersion || m.Type == "" {
			t.Fatalf("decodeMessage accepted %+v", m)
		}
		// What was accepted encodes again (unless it outgrew a
		// datagram) into bytes that decode to the same message.
		b1, err := encodeMessage(m)
		if errors.Is(err, ErrHandshake) {
			return
		}
		if err != nil {
			t.Fatalf("encode %+v: %v", m, err)
		}
		m2, err := decodeMessage(b1)
		if err != nil {
			t.Fatalf("re-encoded %q does not decode: %v", b1, err)
		}
		b2, err := encodeMessage(m2)
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("round trip changed the message: %q -> %q (%v)", b1, b2, err)
		}
	})
}

func FuzzParseHandoffEnv(f *testing.F) {
	for _, s := range []string{
		"v=1;ppid=10;gen=3;attempt=2", "v=1;ppid=1;gen=1;attempt=1", "", "v=1", "v=2;ppid=10;gen=3;attempt=2",
		"v=1;ppid=10;gen=3;attempt=2;x=1", "v=1;ppid=-1;gen=3;attempt=2", "v=1;ppid=10;gen=3;gen=3",
		"v=1;ppid=99999999999999999999;gen=1;attempt=1", "v=1;ppid=10;gen=3;attempt", "v=+1;ppid=010;gen=3;attempt=2",
		"attempt=2;gen=3;ppid=10;v=1", ";;;", "v=1;;ppid=1;gen=1;attempt=1", "v=1;ppid=1;gen=1;attempt=1\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parseHandoffEnv(s)
		if err != nil {
			if !errors.Is(err, ErrHandshake) {
				t.Fatalf("parseHandoffEnv(%q) error %v does not wrap ErrHandshake", s, err)
			}
			return
		}
		if h.Version != handoffVersion || h.ParentPid < 0 || h.Generation < 0 || h.Attempt < 0 {
			t.Fatalf("parseHandoffEnv(%q) accepted %+v", s, h)
		}
		if again, err := parseHandoffEnv(h.String()); err != nil || again != h {
			t.Fatalf("round trip of %q: %+v -> %q -> %+v, %v", s, h, h.String(), again, err)
		}
	})
}

func FuzzParseControlRequest(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"cmd":"status"}`, `{"v":1,"cmd":"upgrade","wait":true,"timeout_ms":30000}`, `{"v":1,"cmd":"upgrade"}`,
		`{"v":2,"cmd":"status"}`, `{"v":1,"cmd":"frobnicate"}`, `{"v":1}`, `not json`, ``, `{"v":1,"cmd":"status"} trailing`,
		`{"v":1,"cmd":"upgrade","timeout_ms":-1}`, `{"v":1,"cmd":"upgrade","timeout_ms":9223372036854775807}`,
		`{"v":1,"cmd":"upgrade","timeout_ms":1e30}`, `{"v":"1","cmd":"status"}`, `{"V":1,"CMD":"status"}`, "{\"v\":1,\"cmd\":\"status\"}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, code, err := parseControlRequest(line)
		if err != nil {
			if code != CodeBadRequest && code != CodeVersion {
				t.Fatalf("parseControlRequest(%q): error %v with code %q", line, err, code)
			}
			if err.Error() == "" {
				t.Fatalf("parseControlRequest(%q): empty error", line)
			}
			return
		}
		if code != "" || req.Version != ControlVersion || (req.Command != CommandStatus && req.Command != CommandUpgrade) {
			t.Fatalf("parseControlRequest(%q) accepted %+v, code %q", line, req, code)
		}
		if d := time.Duration(req.TimeoutMillis) * time.Millisecond; d < 0 || d/time.Millisecond != time.Duration(req.TimeoutMillis) {
			t.Fatalf("parseControlRequest(%q) accepted timeout_ms %d, which overflows a Duration", line, req.TimeoutMillis)
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if again, _, err := parseControlRequest(b); err != nil || again != req {
			t.Fatalf("round trip of %q: %+v -> %s -> %+v, %v", line, req, b, again, err)
		}
	})
}
