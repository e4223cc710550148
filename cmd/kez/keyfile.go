package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/kez-chat/kezd/client/envelope"
)

// keyFile is the JSON a key file holds. The secrets never leave it except as
// signatures, and `kez nkey` on request.
type keyFile struct {
	Handle           string `json:"handle"`
	SigningSeed      string `json:"signing_seed"`
	EncryptionSecret string `json:"encryption_secret"`
	SigningKey       string `json:"signing_key"`
	EncryptionKey    string `json:"encryption_key"`
	Server           string `json:"server,omitempty"`
	// Previous are the key sets from before rotations, oldest first.
	Previous []pastKeys `json:"previous,omitempty"`
}

func (k *keyFile) identity() (*envelope.Identity, error) {
	seed, err := hex.DecodeString(k.SigningSeed)
	if err != nil {
		return nil, fmt.Errorf("signing_seed: %w", err)
	}
	enc, err := hex.DecodeString(k.EncryptionSecret)
	if err != nil {
		return nil, fmt.Errorf("encryption_secret: %w", err)
	}
	id, err := envelope.NewIdentity(k.Handle, seed, enc)
	if err != nil {
		return nil, err
	}
	if id.SigningKeyHex() != k.SigningKey || id.EncryptionKeyHex() != k.EncryptionKey {
		return nil, errors.New("public keys do not match the secrets")
	}
	return id, nil
}

func newKeyFile(id *envelope.Identity, server string) *keyFile {
	return &keyFile{
		Handle:           id.Handle,
		SigningSeed:      hex.EncodeToString(id.Signing.Seed()),
		EncryptionSecret: hex.EncodeToString(id.Encryption.Bytes()),
		SigningKey:       id.SigningKeyHex(),
		EncryptionKey:    id.EncryptionKeyHex(),
		Server:           server,
	}
}

// configDir is the user's configuration directory, as os.UserConfigDir
// finds it but reading the environment through getenv.
func configDir(getenv func(string) string) (string, error) {
	switch runtime.GOOS {
	case "windows", "darwin", "ios", "plan9":
		return os.UserConfigDir()
	}
	if d := getenv("XDG_CONFIG_HOME"); d != "" && filepath.IsAbs(d) {
		return d, nil
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config"), nil
	}
	return "", errors.New("neither $XDG_CONFIG_HOME nor $HOME is set; use --key FILE")
}

// keyPath is the key file of handle: flagPath when given, else the default.
func keyPath(getenv func(string) string, flagPath, handle string) (string, error) {
	if flagPath != "" {
		return flagPath, nil
	}
	dir, err := configDir(getenv)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "kez", handle+".json"), nil
}

// errKeyExists reports a keygen that would overwrite a key file.
var errKeyExists = errors.New("key file exists")

// writeKeyFile writes k to path with mode 0600, never readable by others at
// any moment: the file is created 0600 (a temporary beside it, renamed into
// place), so no umask can widen it. Without force an existing file is kept.
func writeKeyFile(path string, k *keyFile, force bool) error {
	data, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if !force {
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("%w: %s (use --force to replace it)", errKeyExists, path)
		}
	}
	tmp, err := os.CreateTemp(dir, ".kez-key-*") // created with mode 0600
	if err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	if !force {
		// Link fails if path appeared meanwhile, so a racing keygen never
		// replaces a key.
		if err := os.Link(tmp.Name(), path); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%w: %s (use --force to replace it)", errKeyExists, path)
			}
			return fmt.Errorf("write key file: %w", err)
		}
		return nil
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	return nil
}

// readKeyFile loads a key file, refusing one that others can read.
func readKeyFile(path string) (*keyFile, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no key file %s (run kez keygen first, or pass --key FILE)", path)
		}
		return nil, err
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key file %s is accessible by other users (mode %v); run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var k keyFile
	if err := json.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return &k, nil
}
