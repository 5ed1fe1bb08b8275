package upgrader

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"

	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// ask sends one line on the control socket and decodes the reply line.
func ask(t *testing.T, sock, line string) ControlDataReply {
	t.Helper()
	c, err := DialControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatal(err)
	}
	var r ControlDataReply
	b, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("reply %q: %v", b, err)
	}
	return r
}

// TestHandleControl: an added command gets its args and answers in data;
// its error comes back with the ControlError's code; the built-in
// commands still work, an unknown command is still refused, and the names
// of the built-in ones cannot be taken.
func TestHandleControl(t *testing.T) {
	defer goleak.VerifyNone(t)
	sock := filepath.Join(t.TempDir(), "control.sock")
	u, err := newUpgrader(newFakeFlip(), Options{ControlSocket: sock}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	missing := errors.New("no such thing")
	err = u.HandleControl("things.get", func(_ context.Context, args json.RawMessage) (any, error) {
		var a struct{ ID string }
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, &ControlError{Code: CodeBadRequest, Err: err}
		}
		if a.ID != "x" {
			return nil, &ControlError{Code: CodeNotFound, Err: missing}
		}
		return map[string]string{"id": a.ID, "state": "fine"}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{CommandStatus, CommandUpgrade, "things.get", ""} {
		if err := u.HandleControl(name, func(context.Context, json.RawMessage) (any, error) { return nil, nil }); err == nil {
			t.Errorf("HandleControl(%q) accepted", name)
		}
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	r := ask(t, sock, `{"v":1,"cmd":"things.get","args":{"ID":"x"}}`)
	if r.Type != ReplyData || string(r.Data) != `{"id":"x","state":"fine"}` || r.Pid == 0 {
		t.Errorf("things.get x: %+v %s", r, r.Data)
	}
	if r := ask(t, sock, `{"v":1,"cmd":"things.get","args":{"ID":"y"}}`); r.Type != ReplyError || r.Code != CodeNotFound || r.Error != missing.Error() {
		t.Errorf("things.get y: %+v", r)
	}
	if r := ask(t, sock, `{"v":1,"cmd":"things.get"}`); r.Type != ReplyError || r.Code != CodeBadRequest {
		t.Errorf("things.get without args: %+v", r)
	}
	if r := ask(t, sock, `{"v":2,"cmd":"things.get"}`); r.Type != ReplyError || r.Code != CodeVersion {
		t.Errorf("things.get at protocol 2: %+v", r)
	}
	if r := ask(t, sock, `{"v":1,"cmd":"things.put"}`); r.Type != ReplyError || r.Code != CodeBadRequest {
		t.Errorf("an unknown command: %+v", r)
	}
	if r := ask(t, sock, `{"v":1,"cmd":"status"}`); r.Type != ReplyStatus || r.Status == nil {
		t.Errorf("status: %+v", r)
	}
	if got := u.ControlCommands(); len(got) != 1 || got[0] != "things.get" {
		t.Errorf("ControlCommands = %v", got)
	}
}
