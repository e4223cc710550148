package postgres

import (
	"context"
	"encoding/binary"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// envelopes is a batch's envelopes as one text[] parameter, encoded in one
// allocation of the right size.
//
// pgx encodes a [][]byte element by element into a parameter buffer that
// it cuts back to 256 bytes after every statement, so a batch of a dozen 1 KiB
// envelopes grew (and copied) that buffer over and over: 4 KB allocated per
// message, a quarter of the send path's allocations. The elements must be
// UTF-8 text (AppendMessage checks it).
type envelopes [][]byte

// registerEnvelopes makes conn encode envelopes and []string itself
// (pgxpool's AfterConnect).
func registerEnvelopes(_ context.Context, conn *pgx.Conn) error {
	return withEnvelopes(conn.TypeMap())
}

// withEnvelopes makes m encode envelopes and []string as text[] with
// encodeTextArray; text[] keeps pgx's codec for everything else.
func withEnvelopes(m *pgtype.Map) error {
	t, ok := m.TypeForOID(pgtype.TextArrayOID)
	if !ok {
		return errors.New("pgx has no text[] type")
	}
	m.RegisterType(&pgtype.Type{Name: t.Name, OID: t.OID, Codec: textArrayCodec{t.Codec}})
	return nil
}

// textArrayCodec is pgx's text[] codec, with envelopes and []string encoded
// by encodeTextArray. pgx boxes each element of a []string in an interface
// to encode it, an allocation per element: four per message for the
// batch's recipients, senders and ids.
type textArrayCodec struct{ pgtype.Codec }

func (c textArrayCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if format == pgtype.BinaryFormatCode {
		switch value.(type) {
		case envelopes:
			return encodeTextArray[envelopes, []byte]{}
		case []string:
			return encodeTextArray[[]string, string]{}
		}
	}
	return c.Codec.PlanEncode(m, oid, format, value)
}

// encodeTextArray writes a slice of texts in PostgreSQL's binary array
// format: a header (dimensions, a has-nulls flag, the element type; then
// each dimension's length and lower bound), then each element as its length
// and its bytes.
type encodeTextArray[S ~[]E, E ~string | ~[]byte] struct{}

func (encodeTextArray[S, E]) Encode(value any, buf []byte) ([]byte, error) {
	elems := value.(S) // never nil: pgx encodes a nil value as NULL without a plan
	n := 20
	for _, e := range elems {
		n += 4 + len(e)
	}
	// One allocation, whatever the build (slices.Grow's append of a make
	// takes two under the race detector).
	if cap(buf)-len(buf) < n {
		grown := make([]byte, len(buf), len(buf)+n)
		copy(grown, buf)
		buf = grown
	}
	buf = binary.BigEndian.AppendUint32(buf, 1) // dimensions (none is one of length 0, as pgx writes it)
	buf = binary.BigEndian.AppendUint32(buf, 0) // no nulls
	buf = binary.BigEndian.AppendUint32(buf, pgtype.TextOID)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(elems)))
	buf = binary.BigEndian.AppendUint32(buf, 1) // lower bound
	for _, e := range elems {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(e)))
		buf = append(buf, e...)
	}
	return buf, nil
}
