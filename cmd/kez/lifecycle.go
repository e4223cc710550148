package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
)

// pastKeys is a key set the handle had before a rotation. Kept in the key
// file so that messages sealed to it still open.
type pastKeys struct {
	SigningSeed      string `json:"signing_seed"`
	EncryptionSecret string `json:"encryption_secret"`
	SigningKey       string `json:"signing_key"`
	EncryptionKey    string `json:"encryption_key"`
}

// previous returns the identities of k's earlier key sets, newest first.
func (k *keyFile) previous() ([]*envelope.Identity, error) {
	var ids []*envelope.Identity
	for i := len(k.Previous) - 1; i >= 0; i-- {
		p := k.Previous[i]
		old := keyFile{Handle: k.Handle, SigningSeed: p.SigningSeed, EncryptionSecret: p.EncryptionSecret,
			SigningKey: p.SigningKey, EncryptionKey: p.EncryptionKey}
		id, err := old.identity()
		if err != nil {
			return nil, fmt.Errorf("previous keys %d: %w", i+1, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// rotated returns k with next as its keys and its current keys kept as the
// newest previous set.
func (k *keyFile) rotated(next *envelope.Identity) *keyFile {
	out := newKeyFile(next, k.Server)
	out.Previous = append(append([]pastKeys{}, k.Previous...), pastKeys{
		SigningSeed: k.SigningSeed, EncryptionSecret: k.EncryptionSecret,
		SigningKey: k.SigningKey, EncryptionKey: k.EncryptionKey,
	})
	return out
}

// rotate replaces the handle's keys with fresh ones at the server. The new
// keys are written beside the key file before the server hears of them, so
// that a crash in between never loses them.
func (e *env) rotate(args []string) error {
	var c common
	fs := e.flags("rotate", &c, true)
	encOnly := fs.Bool("encryption-only", false, "replace only the encryption key")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	k, id, path, err := e.load(&c, c.as)
	if err != nil {
		return err
	}
	cl, err := e.client(&c, k)
	if err != nil {
		return err
	}
	next, err := envelope.Generate(id.Handle)
	if err != nil {
		return err
	}
	if *encOnly {
		next.Signing = id.Signing
	}
	updated := k.rotated(next)
	pending := path + ".rotating"
	if err := writeKeyFile(pending, updated, true); err != nil {
		return fmt.Errorf("keys not rotated: %w", err)
	}
	h, err := cl.Rotate(e.ctx, id, next)
	var refused *client.Error
	switch {
	case errors.As(err, &refused) && refused.Status < 500:
		// The server answered and did not rotate: the new keys are nobody's.
		os.Remove(pending)
		return err
	case err != nil:
		// No answer, or a server failure: it may have rotated, and then
		// only the new keys open the handle.
		return fmt.Errorf("the server may or may not have rotated the keys: the new ones are in %s (if the old key is refused, move it over %s): %w", pending, path, err)
	}
	if err := os.Rename(pending, path); err != nil {
		return fmt.Errorf("keys rotated at the server, but the key file was not updated: the new keys are in %s: %w", pending, err)
	}
	if c.json {
		return e.printJSON(h)
	}
	fmt.Fprintf(e.stdout, "rotated the keys of %s; the old ones stay in %s to read older messages\n", h.Handle, path)
	return nil
}

// deleteAccount deletes the handle and its inbox at the server, after the
// person confirms by typing the handle (or passes --yes).
func (e *env) deleteAccount(args []string) error {
	var c common
	fs := e.flags("delete-account", &c, true)
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	k, id, path, err := e.load(&c, c.as)
	if err != nil {
		return err
	}
	cl, err := e.client(&c, k)
	if err != nil {
		return err
	}
	if !*yes {
		fmt.Fprintf(e.stderr, "This deletes %s at %s and every message in its inbox, for good; the handle can never be registered again.\nType the handle to confirm: ", id.Handle, cl.BaseURL())
		line, _ := bufio.NewReader(e.stdin).ReadString('\n')
		if strings.TrimSpace(line) != id.Handle {
			return errors.New("not confirmed; nothing deleted")
		}
	}
	d, err := cl.DeleteAccount(e.ctx, id)
	if err != nil {
		return err
	}
	if c.json {
		return e.printJSON(d)
	}
	fmt.Fprintf(e.stdout, "deleted %s; its key file %s can no longer be used\n", d.Handle, path)
	return nil
}

// notForThisKey reports whether err, opening a message, means it was sealed
// to another encryption key (perhaps one from before a rotation).
func notForThisKey(err error) bool {
	return errors.Is(err, envelope.ErrWrongRecipient) || errors.Is(err, envelope.ErrDecrypt)
}
