package state_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"sync"

	"github.com/batonhq/baton/state"
)

// A snapshot round trip: the old process freezes and writes its state, the
// new one (here a second registry whose section is one version newer)
// migrates and restores it.
func Example() {
	type sessionsV1 struct{ Users []string }
	type sessionsV2 struct {
		Users map[string]int // user -> logins
	}

	// The old process, schema version 1.
	var mu sync.Mutex
	old := sessionsV1{Users: []string{"ada", "grace"}}
	oldReg, err := state.NewRegistry(state.Options{})
	if err != nil {
		log.Fatal(err)
	}
	if err := oldReg.Register(state.JSON("sessions", 1, &old, &mu)); err != nil {
		log.Fatal(err)
	}

	// The new process reads version 2 and knows how to migrate from 1.
	var cur sessionsV2
	newReg, err := state.NewRegistry(state.Options{})
	if err != nil {
		log.Fatal(err)
	}
	if err := newReg.Register(state.JSON("sessions", 2, &cur, nil)); err != nil {
		log.Fatal(err)
	}
	err = newReg.AddMigration("sessions", 1, 2, func(b []byte) ([]byte, error) {
		var v1 sessionsV1
		if err := json.Unmarshal(b, &v1); err != nil {
			return nil, err
		}
		v2 := sessionsV2{Users: map[string]int{}}
		for _, u := range v1.Users {
			v2.Users[u] = 1
		}
		return json.Marshal(v2)
	})
	if err != nil {
		log.Fatal(err)
	}

	// The old process refuses a successor that cannot read its sections
	// before it freezes anything.
	if err := oldReg.CheckReadable(newReg.Accepts()); err != nil {
		log.Fatal(err)
	}
	if err := oldReg.Freeze(context.Background()); err != nil {
		log.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := oldReg.WriteSnapshot(&buf); err != nil {
		oldReg.Thaw() // the old process keeps its state and serves on
		log.Fatal(err)
	}

	info, err := newReg.ReadSnapshot(&buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("sections:", len(info.Sections))
	fmt.Println("ada:", cur.Users["ada"], "grace:", cur.Users["grace"])
	// Output:
	// sections: 1
	// ada: 1 grace: 1
}
