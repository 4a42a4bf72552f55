package homeserver

import (
	"context"
	"encoding/hex"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/parley-chat/parley/homeserver/accounts"
)

// tokensChannel carries revoked access token hashes between instances.
const tokensChannel = "parley_tokens"

func (s *Server) wireAccounts() error {
	var err error
	s.accounts, err = NewAccountsEngine(s.cfg, s.db, s.log)
	if err != nil {
		return err
	}
	s.deps.Accounts = s.accounts
	s.deps.Limits = s.limiter
	// Other instances cache tokens too: tell them which stopped working,
	// and drop the whole cache if the bus missed messages.
	s.bus.Subscribe(tokensChannel, func(payload string) {
		var hashes [][]byte
		for _, h := range strings.Split(payload, ",") {
			if b, err := hex.DecodeString(h); err == nil {
				hashes = append(hashes, b)
			}
		}
		s.accounts.ForgetTokens(hashes)
	})
	s.bus.OnResume(s.accounts.ForgetAllTokens)
	hooks := s.accounts.Hooks()
	hooks.TokensRevoked = func(hashes [][]byte) {
		var batch []string
		size := 0
		flush := func() {
			if len(batch) == 0 {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.bus.Publish(ctx, tokensChannel, strings.Join(batch, ",")); err != nil {
				s.log.Warn("could not tell other instances about revoked tokens", "err", err)
			}
			batch, size = batch[:0], 0
		}
		for _, h := range hashes {
			if size+65 > 7000 {
				flush()
			}
			batch = append(batch, hex.EncodeToString(h))
			size += 65
		}
		flush()
	}
	s.accounts.SetHooks(hooks)
	river.AddWorker(s.workers, &expireWorker{accounts: s.accounts})
	s.periodicJob(10*time.Minute, func() river.JobArgs { return expireArgs{} })
	return nil
}

// expireArgs is the periodic clean-up of expired sessions and tokens.
type expireArgs struct{}

func (expireArgs) Kind() string { return "parley.expire_sessions" }

type expireWorker struct {
	river.WorkerDefaults[expireArgs]
	accounts *accounts.Engine
}

func (w *expireWorker) Work(ctx context.Context, _ *river.Job[expireArgs]) error {
	_, err := w.accounts.ExpireSessions(ctx)
	return err
}
