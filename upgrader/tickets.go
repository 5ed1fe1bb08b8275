package upgrader

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"sync"
)

// ticketFile names the pipe that carries the session ticket keys to the new
// process.
const ticketFile = "baton.tls-session-ticket-keys"

// maxTicketKeys bounds the keys kept: the newest encrypts, all decrypt, so
// a ticket stays good across maxTicketKeys-1 rotations.
const maxTicketKeys = 4

// SessionTickets holds the keys that encrypt TLS session tickets, shared by
// every generation of the process, so that a client resumes with the new
// process the session the old one issued: a resumed handshake instead of a
// full one, per client, per deploy. The keys travel to the new process in
// a pipe handed over with the listeners: they are never written to disk,
// nor to the state file.
//
// Each new process adds a fresh key, so the keys rotate with every
// upgrade; Rotate does it between upgrades too. It is safe for concurrent
// use.
type SessionTickets struct {
	mu   sync.RWMutex
	keys []ticketKey // newest first
}

type ticketKey struct {
	id   [8]byte // first bytes of the key's SHA-256: which key sealed a ticket
	aead cipher.AEAD
	raw  [32]byte
}

// ShareTLSSessionTickets returns the session ticket keys of this lineage
// of processes: those the previous generation handed over, with a fresh
// one added, or a fresh one in the first process. Call it once, before
// Ready (the keys inherited are read from a file Ready closes), and
// Configure each tls.Config with it; ServeTLS's clone keeps the setting.
func (u *Upgrader) ShareTLSSessionTickets() (*SessionTickets, error) {
	t := &SessionTickets{}
	f, err := u.File(ticketFile)
	if err != nil {
		return nil, fmt.Errorf("upgrader: session ticket keys: %w", err)
	}
	if f != nil {
		raws, err := readTicketKeys(f)
		f.Close()
		if err != nil {
			// The previous generation's tickets are lost, not the
			// service: clients make full handshakes once.
			u.log.Warn("session ticket keys not inherited", "err", err)
		}
		for _, raw := range raws {
			if err := t.add(raw, false); err != nil {
				return nil, err
			}
		}
	}
	if err := t.Rotate(); err != nil {
		return nil, err
	}
	u.OnEvent(func(e Event) {
		if e.Step != StepStarted {
			return
		}
		// Every StepStarted hook runs before the new process starts.
		if err := t.handOn(u); err != nil {
			u.log.Warn("session ticket keys not handed on: clients of the new process make full handshakes", "err", err)
		}
	})
	return t, nil
}

// Rotate adds a fresh key, which encrypts the tickets from now on; the
// older keys still decrypt, up to the bound of four keys.
func (t *SessionTickets) Rotate() error {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return fmt.Errorf("upgrader: session ticket key: %w", err)
	}
	return t.add(raw, true)
}

func (t *SessionTickets) add(raw [32]byte, newest bool) error {
	block, err := aes.NewCipher(raw[:])
	if err != nil {
		return err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return err
	}
	k := ticketKey{aead: aead, raw: raw}
	sum := sha256.Sum256(raw[:])
	copy(k.id[:], sum[:])
	t.mu.Lock()
	defer t.mu.Unlock()
	if newest {
		t.keys = append([]ticketKey{k}, t.keys...)
	} else {
		t.keys = append(t.keys, k)
	}
	if len(t.keys) > maxTicketKeys {
		t.keys = t.keys[:maxTicketKeys]
	}
	return nil
}

// Configure makes cfg seal session tickets with these keys
// (tls.Config.WrapSession and UnwrapSession). A ticket sealed by a key that
// is gone, or damaged, is ignored: that client makes a full handshake.
func (t *SessionTickets) Configure(cfg *tls.Config) {
	cfg.WrapSession = t.wrap
	cfg.UnwrapSession = t.unwrap
}

func (t *SessionTickets) wrap(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	plain, err := ss.Bytes()
	if err != nil {
		return nil, err
	}
	t.mu.RLock()
	k := t.keys[0]
	t.mu.RUnlock()
	out := make([]byte, len(k.id), len(k.id)+k.aead.NonceSize()+len(plain)+k.aead.Overhead())
	copy(out, k.id[:])
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out = append(out, nonce...)
	return k.aead.Seal(out, nonce, plain, k.id[:]), nil
}

func (t *SessionTickets) unwrap(identity []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, k := range t.keys {
		n := len(k.id) + k.aead.NonceSize()
		if len(identity) < n || [8]byte(identity[:8]) != k.id {
			continue
		}
		plain, err := k.aead.Open(nil, identity[len(k.id):n], identity[n:], k.id[:])
		if err != nil {
			return nil, nil // damaged: a full handshake
		}
		ss, err := tls.ParseSessionState(plain)
		if err != nil {
			return nil, nil
		}
		return ss, nil
	}
	return nil, nil // not ours, or its key rotated out
}

// handOn writes the keys into a pipe and hands its read end to the next
// generation. A pipe holds them in the kernel, never on disk; a few keys
// fit its buffer, so no reader is needed yet.
func (t *SessionTickets) handOn(u *Upgrader) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	t.mu.RLock()
	var buf []byte
	for _, k := range t.keys {
		buf = append(buf, k.raw[:]...)
	}
	t.mu.RUnlock()
	_, err = w.Write(buf)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return u.AddFile(ticketFile, r)
}

// readTicketKeys reads the keys handOn wrote.
func readTicketKeys(f *os.File) ([][32]byte, error) {
	b, err := io.ReadAll(io.LimitReader(f, 32*maxTicketKeys+1))
	if err != nil {
		return nil, err
	}
	if len(b)%32 != 0 || len(b) > 32*maxTicketKeys {
		return nil, fmt.Errorf("%d bytes of keys, not a multiple of 32 up to %d", len(b), 32*maxTicketKeys)
	}
	keys := make([][32]byte, len(b)/32)
	for i := range keys {
		copy(keys[i][:], b[i*32:])
	}
	return keys, nil
}
