package session

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"sandbar/agent/internal/initproc"
	"sandbar/agent/internal/proc"
)

// Defaults from the protocol.
const (
	DefaultRingBytes   = 4 << 20
	DefaultIdleTimeout = 300 * time.Second
	DefaultTTL         = 600 * time.Second
	// expiredMemory bounds how many expired ids are remembered for 410.
	expiredMemory = 10000
	maxIDLen      = 256
)

// Config configures a Manager.
type Config struct {
	Proc      proc.Config
	Reaper    *initproc.Reaper
	RingBytes int // per stream; DefaultRingBytes when 0
}

// CreateRequest is the body of POST /sessions.
type CreateRequest struct {
	CommandID          string            `json:"command_id"`
	Command            string            `json:"command"`
	Shell              string            `json:"shell,omitempty"`
	Env                map[string]string `json:"env,omitempty"`
	Cwd                string            `json:"cwd,omitempty"`
	User               string            `json:"user,omitempty"` // "name", "uid", "name:group", "uid:gid"
	TimeoutSeconds     float64           `json:"timeout_seconds,omitempty"`
	IdleTimeoutSeconds float64           `json:"idle_timeout_seconds,omitempty"`
	KillOnDisconnect   bool              `json:"kill_on_disconnect,omitempty"`
	TTLSeconds         float64           `json:"ttl_seconds,omitempty"`
	PTY                bool              `json:"pty,omitempty"`
	Cols               int               `json:"cols,omitempty"`
	Rows               int               `json:"rows,omitempty"`
}

// Manager owns all sessions, keyed by command_id.
type Manager struct {
	cfg Config

	mu       sync.Mutex
	sessions map[string]*Session
	expired  *idSet
}

// NewManager returns an empty manager.
func NewManager(cfg Config) *Manager {
	if cfg.RingBytes <= 0 {
		cfg.RingBytes = DefaultRingBytes
	}
	return &Manager{cfg: cfg, sessions: make(map[string]*Session), expired: newIDSet(expiredMemory)}
}

// ValidateID checks a command_id; ids appear in URL paths.
func ValidateID(id string) error {
	if id == "" || len(id) > maxIDLen || strings.ContainsAny(id, "/?#%") {
		return fmt.Errorf("%w: command_id must be 1-%d characters without / ? # %%", ErrInvalid, maxIDLen)
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: command_id has control characters", ErrInvalid)
		}
	}
	return nil
}

// seconds converts a request's seconds: 0 means def, -1 means never
// (returned as -1ns) when allowNever, anything else negative is invalid.
func seconds(name string, v float64, def time.Duration, allowNever bool) (time.Duration, error) {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0) || v > math.MaxInt64/float64(time.Second):
		return 0, fmt.Errorf("%w: %s out of range", ErrInvalid, name)
	case v == 0:
		return def, nil
	case v == -1 && allowNever:
		return -1, nil
	case v < 0:
		return 0, fmt.Errorf("%w: %s must be >= 0 or -1", ErrInvalid, name)
	}
	return time.Duration(v * float64(time.Second)), nil
}

func (req *CreateRequest) options() (Options, error) {
	o := Options{ID: req.CommandID, KillOnDisconnect: req.KillOnDisconnect, PTY: req.PTY}
	var err error
	if req.TimeoutSeconds == -1 {
		req.TimeoutSeconds = 0 // "never" and "none" are the same thing
	}
	if o.Timeout, err = seconds("timeout_seconds", req.TimeoutSeconds, 0, false); err != nil {
		return o, err
	}
	if o.IdleTimeout, err = seconds("idle_timeout_seconds", req.IdleTimeoutSeconds, DefaultIdleTimeout, true); err != nil {
		return o, err
	}
	if o.TTL, err = seconds("ttl_seconds", req.TTLSeconds, DefaultTTL, true); err != nil {
		return o, err
	}
	for _, v := range []int{req.Cols, req.Rows} {
		if v < 0 || v > math.MaxUint16 {
			return o, fmt.Errorf("%w: cols and rows must be 1-65535", ErrInvalid)
		}
	}
	o.Cols, o.Rows = uint16(req.Cols), uint16(req.Rows)
	return o, nil
}

// Create starts a session, or returns the existing one with that id
// (created false) without starting anything.
func (m *Manager) Create(req CreateRequest) (*Session, bool, error) {
	if err := ValidateID(req.CommandID); err != nil {
		return nil, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.sessions[req.CommandID]; ok {
		return s, false, nil
	}
	if m.expired.has(req.CommandID) {
		return nil, false, fmt.Errorf("session %q: %w", req.CommandID, ErrExpired)
	}
	opts, err := req.options()
	if err != nil {
		return nil, false, err
	}
	prepared, err := m.cfg.Proc.Prepare(proc.Spec{
		Command: req.Command, Shell: req.Shell, Env: req.Env, Cwd: req.Cwd, PTY: req.PTY, User: req.User,
	})
	if err != nil {
		return nil, false, fmt.Errorf("session %q: %w", req.CommandID, err)
	}
	// Starting under m.mu makes concurrent creates of one id start one process.
	p, err := proc.Start(m.cfg.Reaper, prepared, proc.Options{Stdin: true, PTY: opts.PTY, Cols: opts.Cols, Rows: opts.Rows})
	if err != nil {
		return nil, false, fmt.Errorf("session %q: %w", req.CommandID, err)
	}
	s := newSession(opts, p, m.cfg.RingBytes, m.finished)
	m.sessions[req.CommandID] = s
	return s, true, nil
}

// finished schedules the removal of s once its ttl has passed.
func (m *Manager) finished(s *Session) {
	if s.opts.TTL < 0 {
		return
	}
	time.AfterFunc(s.opts.TTL, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.sessions[s.opts.ID] == s {
			delete(m.sessions, s.opts.ID)
			m.expired.add(s.opts.ID)
		}
	})
}

// Get returns the session with that id, ErrNotFound, or ErrExpired.
func (m *Manager) Get(id string) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.sessions[id]; ok {
		return s, nil
	}
	if m.expired.has(id) {
		return nil, fmt.Errorf("session %q: %w", id, ErrExpired)
	}
	return nil, fmt.Errorf("session %q: %w", id, ErrNotFound)
}

// List returns every session, oldest first.
func (m *Manager) List() []Info {
	m.mu.Lock()
	all := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		all = append(all, s)
	}
	m.mu.Unlock()
	sort.Slice(all, func(i, j int) bool {
		if !all[i].created.Equal(all[j].created) {
			return all[i].created.Before(all[j].created)
		}
		return all[i].opts.ID < all[j].opts.ID
	})
	infos := make([]Info, len(all))
	for i, s := range all {
		infos[i] = s.Info()
	}
	return infos
}

// idSet is a set of ids that forgets the oldest beyond its capacity.
type idSet struct {
	ids   map[string]struct{}
	order []string // ring of insertion order
	next  int
}

func newIDSet(capacity int) *idSet {
	return &idSet{ids: make(map[string]struct{}), order: make([]string, 0, capacity)}
}

func (s *idSet) has(id string) bool {
	_, ok := s.ids[id]
	return ok
}

func (s *idSet) add(id string) {
	if s.has(id) {
		return
	}
	if len(s.order) < cap(s.order) {
		s.order = append(s.order, id)
	} else {
		delete(s.ids, s.order[s.next])
		s.order[s.next] = id
		s.next = (s.next + 1) % len(s.order)
	}
	s.ids[id] = struct{}{}
}
