package storage

import (
	"context"
	"strconv"
	"strings"
)

// maxInList bounds one IN (…) list; longer lists are queried in chunks.
const maxInList = 256

// inSize rounds n up to a power of two so that a handful of statement
// shapes serve every list length (statements are prepared per shape).
func inSize(n int) int {
	s := 1
	for s < n {
		s <<= 1
	}
	return s
}

// inPlaceholders returns "$first, $first+1, …" for n parameters.
func inPlaceholders(first, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(first + i))
	}
	return b.String()
}

// queryIn runs query — which must contain the marker "(IN)" where the
// list goes (each marker stands for the same list), after `fixed` leading arguments — once per chunk of values,
// padding each chunk by repeating its last value, and calls scan per row.
func queryIn[T any](ctx context.Context, q Querier, query string, fixed []any, values []T, scan func(Rows) error) error {
	for start := 0; start < len(values); start += maxInList {
		chunk := values[start:min(start+maxInList, len(values))]
		size := inSize(len(chunk))
		args := make([]any, 0, len(fixed)+size)
		args = append(args, fixed...)
		for i := range size {
			args = append(args, chunk[min(i, len(chunk)-1)])
		}
		sql := strings.ReplaceAll(query, "(IN)", "("+inPlaceholders(len(fixed)+1, size)+")")
		rows, err := q.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			if err := scan(rows); err != nil {
				rows.Close()
				return err
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
