// Package jpegdc decodes a baseline JPEG at one eighth of its size by
// reading only the DC coefficient of each 8×8 block: the block's average,
// which is what libjpeg's scaled decoding gives at 1/8. It still walks
// every coefficient of the entropy-coded data, but computes no inverse
// DCT, so a thumbnail of a large photograph costs a fraction of a full
// decode. Formats it does not handle (progressive or arithmetic coding,
// 12-bit samples, CMYK, RGB without the YCbCr transform, unusual
// subsampling) return ErrUnsupported: decode those in full instead. It
// is returned only from the headers, before any entropy-coded data is
// read, so a caller that kept the bytes read so far can replay them to a
// full decoder.
package jpegdc

import (
	"bufio"
	"errors"
	"image"
	"io"
)

// ErrUnsupported reports a JPEG this package does not decode.
var ErrUnsupported = errors.New("jpegdc: unsupported JPEG")

type component struct {
	id     uint8
	h, v   int   // sampling factors
	tq     uint8 // quantisation table
	td, ta uint8 // DC and AC Huffman tables (from the scan)
	// dc holds the block averages; bw×bh blocks, padded to whole MCUs.
	dc     []uint8
	bw, bh int
	pred   int32
}

type huffman struct {
	// lookup maps the next lookBits bits to symbol<<8 | code length (0:
	// the code is longer; decode it bit by bit with maxCode).
	lookup  [1 << lookBits]uint16
	maxCode [17]int32 // largest code of each length, -1 if none
	valPtr  [17]int32 // index in vals of the first code of each length
	minCode [17]int32
	vals    []uint8
	ok      bool
}

const lookBits = 9

type decoder struct {
	r     *bufio.Reader
	comps []component
	qt    [4]uint16 // DC value of each quantisation table
	qtOK  [4]bool
	dc    [4]huffman
	ac    [4]huffman
	ri    int // restart interval in MCUs (0: none)
	w, h  int
	hmax  int
	vmax  int
	adobe int // Adobe APP14 transform (-1: no such marker)
	frame bool

	// bit reader over entropy-coded data
	acc    uint64
	nbits  uint
	marker uint8 // marker met inside entropy-coded data (0: none)
	// pending is a marker read ahead, for nextMarker to return.
	pending uint8
	onData  func()
}

// Decode reads a baseline JPEG and returns it at 1/8 scale (rounded up):
// an *image.YCbCr for colour, an *image.Gray for greyscale. It allocates
// by the frame's declared size: bound that (image.DecodeConfig) before
// decoding untrusted input. onData, if
// not nil, is called once the headers have been accepted, just before
// entropy-coded data is read: ErrUnsupported can no longer come then.
func Decode(r io.Reader, onData func()) (image.Image, error) {
	d := &decoder{r: bufio.NewReaderSize(r, 64<<10), adobe: -1, onData: onData}
	return d.decode()
}

func (d *decoder) readFull(b []byte) error {
	_, err := io.ReadFull(d.r, b)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (d *decoder) u16() (int, error) {
	var b [2]byte
	if err := d.readFull(b[:]); err != nil {
		return 0, err
	}
	return int(b[0])<<8 | int(b[1]), nil
}

func (d *decoder) decode() (image.Image, error) {
	var soi [2]byte
	if err := d.readFull(soi[:]); err != nil {
		return nil, err
	}
	if soi != [2]byte{0xFF, 0xD8} {
		return nil, errors.New("jpegdc: not a JPEG")
	}
	scanned := false
	for {
		m, err := d.nextMarker()
		if err != nil {
			return nil, err
		}
		if m == 0xD9 { // EOI
			break
		}
		if m >= 0xD0 && m <= 0xD7 || m == 0x01 {
			continue // stray RST or TEM: no length
		}
		n, err := d.u16()
		if err != nil {
			return nil, err
		}
		if n < 2 {
			return nil, errors.New("jpegdc: bad segment length")
		}
		n -= 2
		switch {
		case m == 0xC0 || m == 0xC1:
			if err := d.readSOF(n); err != nil {
				return nil, err
			}
		case m >= 0xC2 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC:
			if d.frame {
				return nil, errors.New("jpegdc: two frames")
			}
			return nil, ErrUnsupported // progressive, lossless, arithmetic
		case m == 0xC4:
			if err := d.readDHT(n); err != nil {
				return nil, err
			}
		case m == 0xDB:
			if err := d.readDQT(n); err != nil {
				return nil, err
			}
		case m == 0xDD:
			if n != 2 {
				return nil, errors.New("jpegdc: bad DRI")
			}
			if d.ri, err = d.u16(); err != nil {
				return nil, err
			}
		case m == 0xEE:
			if err := d.readAdobe(n); err != nil {
				return nil, err
			}
		case m == 0xDA:
			if !d.frame {
				return nil, errors.New("jpegdc: scan before frame")
			}
			if err := d.readScan(n); err != nil {
				return nil, err
			}
			scanned = true
			if d.marker != 0 {
				// The scan ended at a marker the bit reader consumed.
				if d.marker == 0xD9 {
					return d.image()
				}
				d.pending, d.marker = d.marker, 0
			}
		default:
			if _, err := d.r.Discard(n); err != nil {
				return nil, err
			}
		}
	}
	if !scanned {
		return nil, errors.New("jpegdc: no scan")
	}
	return d.image()
}

func (d *decoder) nextMarker() (uint8, error) {
	if d.pending != 0 {
		m := d.pending
		d.pending = 0
		return m, nil
	}
	for {
		b, err := d.r.ReadByte()
		if err != nil {
			return 0, err
		}
		if b != 0xFF {
			continue // garbage between segments: skip, as decoders do
		}
		for b == 0xFF {
			if b, err = d.r.ReadByte(); err != nil {
				return 0, err
			}
		}
		if b != 0 {
			return b, nil
		}
	}
}

func (d *decoder) readSOF(n int) error {
	if d.frame {
		return errors.New("jpegdc: two frames")
	}
	if n < 6 {
		return errors.New("jpegdc: short SOF")
	}
	var b [6]byte
	if err := d.readFull(b[:]); err != nil {
		return err
	}
	if b[0] != 8 {
		return ErrUnsupported // 12-bit
	}
	d.h, d.w = int(b[1])<<8|int(b[2]), int(b[3])<<8|int(b[4])
	nc := int(b[5])
	if d.w == 0 || d.h == 0 {
		return ErrUnsupported // height from DNL
	}
	if nc != 1 && nc != 3 {
		return ErrUnsupported // CMYK and others
	}
	if n != 6+3*nc {
		return errors.New("jpegdc: bad SOF length")
	}
	d.comps = make([]component, nc)
	for i := range d.comps {
		var c [3]byte
		if err := d.readFull(c[:]); err != nil {
			return err
		}
		h, v := int(c[1]>>4), int(c[1]&15)
		if h < 1 || h > 4 || v < 1 || v > 4 || c[2] > 3 {
			return errors.New("jpegdc: bad component")
		}
		d.comps[i] = component{id: c[0], h: h, v: v, tq: c[2]}
		d.hmax, d.vmax = max(d.hmax, h), max(d.vmax, v)
	}
	if nc == 3 {
		// Luma at full rate, chroma at one rate: the ratios image.YCbCr has.
		y, cb, cr := d.comps[0], d.comps[1], d.comps[2]
		if cb.h != 1 || cb.v != 1 || cr.h != 1 || cr.v != 1 || y.h > 2 || y.v > 2 {
			return ErrUnsupported
		}
	}
	mcuW, mcuH := 8*d.hmax, 8*d.vmax
	mx, my := (d.w+mcuW-1)/mcuW, (d.h+mcuH-1)/mcuH
	for i := range d.comps {
		c := &d.comps[i]
		c.bw, c.bh = mx*c.h, my*c.v
		c.dc = make([]uint8, c.bw*c.bh)
	}
	d.frame = true
	return nil
}

func (d *decoder) readDQT(n int) error {
	for n > 0 {
		pq, err := d.r.ReadByte()
		if err != nil {
			return err
		}
		n--
		id := pq & 15
		if id > 3 {
			return errors.New("jpegdc: bad DQT")
		}
		size := 64
		if pq>>4 == 1 {
			size = 128
		} else if pq>>4 != 0 {
			return errors.New("jpegdc: bad DQT precision")
		}
		if n < size {
			return errors.New("jpegdc: short DQT")
		}
		var first [2]byte
		if err := d.readFull(first[:]); err != nil {
			return err
		}
		if size == 64 {
			d.qt[id] = uint16(first[0])
		} else {
			d.qt[id] = uint16(first[0])<<8 | uint16(first[1])
		}
		d.qtOK[id] = true
		if _, err := d.r.Discard(size - 2); err != nil {
			return err
		}
		n -= size
	}
	return nil
}

func (d *decoder) readDHT(n int) error {
	for n > 0 {
		if n < 17 {
			return errors.New("jpegdc: short DHT")
		}
		var hdr [17]byte
		if err := d.readFull(hdr[:]); err != nil {
			return err
		}
		n -= 17
		class, id := hdr[0]>>4, hdr[0]&15
		if class > 1 || id > 3 {
			return errors.New("jpegdc: bad DHT")
		}
		total := 0
		for _, c := range hdr[1:] {
			total += int(c)
		}
		if total > 256 || total > n {
			return errors.New("jpegdc: bad DHT counts")
		}
		vals := make([]uint8, total)
		if err := d.readFull(vals); err != nil {
			return err
		}
		n -= total
		t := &d.dc[id]
		if class == 1 {
			t = &d.ac[id]
		}
		if err := t.build(hdr[1:], vals); err != nil {
			return err
		}
	}
	return nil
}

// build makes the decoding tables of a canonical Huffman code (T.81 C.2,
// F.2.2.3).
func (t *huffman) build(counts []byte, vals []uint8) error {
	*t = huffman{vals: vals}
	code, k := int32(0), int32(0)
	for l := 1; l <= 16; l++ {
		c := int32(counts[l-1])
		if code+c > 1<<l {
			return errors.New("jpegdc: bad Huffman code")
		}
		t.valPtr[l], t.minCode[l] = k, code
		if c == 0 {
			t.maxCode[l] = -1
		} else {
			t.maxCode[l] = code + c - 1
		}
		if l <= lookBits {
			for i := int32(0); i < c; i++ {
				// Every lookBits-bit prefix starting with this code.
				shift := uint(lookBits - l)
				base := (code + i) << shift
				for j := int32(0); j < 1<<shift; j++ {
					t.lookup[base+j] = uint16(vals[k+i])<<8 | uint16(l)
				}
			}
		}
		code += c
		k += c
		code <<= 1
	}
	t.ok = true
	return nil
}

func (d *decoder) readAdobe(n int) error {
	if n < 12 {
		_, err := d.r.Discard(n)
		return err
	}
	b := make([]byte, n)
	if err := d.readFull(b); err != nil {
		return err
	}
	if string(b[:5]) == "Adobe" {
		d.adobe = int(b[11])
	}
	return nil
}

func (d *decoder) readScan(n int) error {
	if len(d.comps) == 3 {
		// Tables that say RGB come before the first scan (Adobe APP14
		// with transform 0, or components named R, G, B without it).
		rgb := d.comps[0].id == 'R' && d.comps[1].id == 'G' && d.comps[2].id == 'B'
		if d.adobe == 0 || rgb && d.adobe != 1 {
			return ErrUnsupported
		}
	}
	ns, err := d.r.ReadByte()
	if err != nil {
		return err
	}
	if ns < 1 || int(ns) > len(d.comps) || n != 4+2*int(ns) {
		return errors.New("jpegdc: bad SOS")
	}
	scan := make([]*component, ns)
	for i := range scan {
		var b [2]byte
		if err := d.readFull(b[:]); err != nil {
			return err
		}
		for j := range d.comps {
			if d.comps[j].id == b[0] {
				scan[i] = &d.comps[j]
			}
		}
		if scan[i] == nil || b[1]>>4 > 3 || b[1]&15 > 3 {
			return errors.New("jpegdc: bad scan component")
		}
		scan[i].td, scan[i].ta = b[1]>>4, b[1]&15
		if !d.dc[scan[i].td].ok || !d.ac[scan[i].ta].ok || !d.qtOK[scan[i].tq] {
			return errors.New("jpegdc: scan uses a missing table")
		}
	}
	var ss [3]byte
	if err := d.readFull(ss[:]); err != nil {
		return err
	}
	if ss[0] != 0 || ss[1] != 63 || ss[2] != 0 {
		return errors.New("jpegdc: spectral selection in a sequential JPEG")
	}
	for _, c := range scan {
		c.pred = 0
	}
	d.acc, d.nbits, d.marker = 0, 0, 0
	if d.onData != nil {
		d.onData()
		d.onData = nil
	}

	var mx, my int
	if ns == 1 {
		// Non-interleaved: the component's own blocks, one per MCU.
		c := scan[0]
		mx = (((d.w*c.h + d.hmax - 1) / d.hmax) + 7) / 8
		my = (((d.h*c.v + d.vmax - 1) / d.vmax) + 7) / 8
	} else {
		mx, my = (d.w+8*d.hmax-1)/(8*d.hmax), (d.h+8*d.vmax-1)/(8*d.vmax)
	}
	mcus := 0
	for y := 0; y < my; y++ {
		for x := 0; x < mx; x++ {
			if d.ri > 0 && mcus > 0 && mcus%d.ri == 0 {
				if err := d.restart(scan); err != nil {
					return err
				}
			}
			mcus++
			if ns == 1 {
				if err := d.block(scan[0], x, y); err != nil {
					return err
				}
				continue
			}
			for _, c := range scan {
				for v := 0; v < c.v; v++ {
					for h := 0; h < c.h; h++ {
						if err := d.block(c, x*c.h+h, y*c.v+v); err != nil {
							return err
						}
					}
				}
			}
		}
	}
	return nil
}

// restart expects an RSTn marker and resets the predictors.
func (d *decoder) restart(scan []*component) error {
	if d.marker == 0 {
		// Skip the padding bits and read the marker.
		d.acc, d.nbits = 0, 0
		if err := d.fill(); err != nil {
			return err
		}
	}
	if d.marker < 0xD0 || d.marker > 0xD7 {
		return errors.New("jpegdc: missing restart marker")
	}
	d.acc, d.nbits, d.marker = 0, 0, 0
	for _, c := range scan {
		c.pred = 0
	}
	return nil
}

// fill tops the bit accumulator up to at least 57 bits. Past a marker it
// feeds zeros, which a valid stream never decodes into.
func (d *decoder) fill() error {
	for d.nbits <= 56 {
		var b byte
		if d.marker == 0 {
			var err error
			if b, err = d.r.ReadByte(); err != nil {
				return io.ErrUnexpectedEOF
			}
			if b == 0xFF {
				b2, err := d.r.ReadByte()
				if err != nil {
					return io.ErrUnexpectedEOF
				}
				for b2 == 0xFF {
					if b2, err = d.r.ReadByte(); err != nil {
						return io.ErrUnexpectedEOF
					}
				}
				if b2 != 0 {
					d.marker, b = b2, 0
				}
			}
		}
		d.acc |= uint64(b) << (56 - d.nbits)
		d.nbits += 8
	}
	return nil
}

func (d *decoder) bits(n uint) (int32, error) {
	if n == 0 {
		return 0, nil
	}
	if d.nbits < n {
		if err := d.fill(); err != nil {
			return 0, err
		}
	}
	v := int32(d.acc >> (64 - n))
	d.acc <<= n
	d.nbits -= n
	return v, nil
}

func (d *decoder) symbol(t *huffman) (uint8, error) {
	if d.nbits < 16 {
		if err := d.fill(); err != nil {
			return 0, err
		}
	}
	if e := t.lookup[d.acc>>(64-lookBits)]; e&0xFF != 0 {
		l := uint(e & 0xFF)
		d.acc <<= l
		d.nbits -= l
		return uint8(e >> 8), nil
	}
	code := int32(0)
	for l := 1; l <= 16; l++ {
		code = code<<1 | int32(d.acc>>63)
		d.acc <<= 1
		d.nbits--
		if t.maxCode[l] >= code {
			return t.vals[t.valPtr[l]+code-t.minCode[l]], nil
		}
	}
	return 0, errors.New("jpegdc: bad Huffman code")
}

// block decodes one block, keeping its DC average and skipping its AC
// coefficients.
func (d *decoder) block(c *component, bx, by int) error {
	s, err := d.symbol(&d.dc[c.td])
	if err != nil {
		return err
	}
	if s > 11 {
		return errors.New("jpegdc: bad DC size")
	}
	v, err := d.bits(uint(s))
	if err != nil {
		return err
	}
	if s > 0 && v < 1<<(s-1) {
		v -= 1<<s - 1 // extend (T.81 F.2.2.1)
	}
	c.pred += v
	ac := &d.ac[c.ta]
	for k := 1; k < 64; {
		rs, err := d.symbol(ac)
		if err != nil {
			return err
		}
		r, size := int(rs>>4), uint(rs&15)
		if size == 0 {
			if r != 15 {
				break // end of block
			}
			k += 16
			continue
		}
		k += r + 1
		if _, err := d.bits(size); err != nil {
			return err
		}
	}
	if bx < c.bw && by < c.bh {
		// The block average: DC/8, level-shifted (T.81 A.3.3).
		avg := (c.pred*int32(d.qt[c.tq])+4)>>3 + 128
		c.dc[by*c.bw+bx] = uint8(min(max(avg, 0), 255))
	}
	return nil
}

// image assembles the planes at 1/8 of the frame's size.
func (d *decoder) image() (image.Image, error) {
	w, h := (d.w+7)/8, (d.h+7)/8
	if len(d.comps) == 1 {
		c := d.comps[0]
		img := image.NewGray(image.Rect(0, 0, w, h))
		// A lone component's blocks are in its own grid, hmax = h.
		for y := 0; y < h; y++ {
			copy(img.Pix[y*img.Stride:y*img.Stride+w], c.dc[y*c.bw:])
		}
		return img, nil
	}
	var ratio image.YCbCrSubsampleRatio
	switch y := d.comps[0]; {
	case y.h == 1 && y.v == 1:
		ratio = image.YCbCrSubsampleRatio444
	case y.h == 2 && y.v == 1:
		ratio = image.YCbCrSubsampleRatio422
	case y.h == 2 && y.v == 2:
		ratio = image.YCbCrSubsampleRatio420
	case y.h == 1 && y.v == 2:
		ratio = image.YCbCrSubsampleRatio440
	default:
		return nil, errors.New("jpegdc: subsampling") // readSOF allows none other
	}
	img := image.NewYCbCr(image.Rect(0, 0, w, h), ratio)
	copyPlane(img.Y, img.YStride, d.comps[0])
	copyPlane(img.Cb, img.CStride, d.comps[1])
	copyPlane(img.Cr, img.CStride, d.comps[2])
	return img, nil
}

// copyPlane copies a component's block averages into a plane of the
// given stride, as many rows as the plane holds.
func copyPlane(dst []uint8, stride int, c component) {
	rows := len(dst) / stride
	for y := 0; y < rows && y < c.bh; y++ {
		n := min(stride, c.bw)
		copy(dst[y*stride:y*stride+n], c.dc[y*c.bw:y*c.bw+n])
	}
}
