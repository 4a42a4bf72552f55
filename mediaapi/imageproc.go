package mediaapi

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	"image/draw"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"slices"
	"sync"

	"github.com/disintegration/imaging"
	_ "golang.org/x/image/webp" // WebP decoding (thumbnails come out as JPEG or PNG)

	"github.com/parley-chat/parley/internal/jpegdc"
	"github.com/parley-chat/parley/storage"
)

// probeHead is how much of a file probing reads to learn an image's
// format, dimensions and EXIF orientation.
const probeHead = 256 << 10

// probe sniffs r (the whole content) for an image the thumbnailer can
// read. Content that is not such an image gets an empty Format. It reads
// only headers, never pixels, except that it walks a GIF's blocks to
// count frames.
func probe(r io.Reader) (storage.MediaImage, error) {
	head := make([]byte, probeHead)
	n, err := io.ReadFull(r, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return storage.MediaImage{}, err
	}
	head = head[:n]
	cfg, format, err := image.DecodeConfig(bytes.NewReader(head))
	if err != nil && n == probeHead && format != "gif" {
		// Headers longer than the head (large ICC profiles, XMP): read on.
		// Nothing but GIF needs the rest afterwards, and a GIF's header
		// is short.
		cfg, format, err = image.DecodeConfig(io.MultiReader(bytes.NewReader(head), r))
	}
	if err != nil || cfg.Width <= 0 || cfg.Height <= 0 {
		return storage.MediaImage{}, nil
	}
	info := storage.MediaImage{Format: format, Width: cfg.Width, Height: cfg.Height, Orientation: 1, Frames: 1}
	switch format {
	case "jpeg":
		info.Orientation = jpegOrientation(head)
		if info.Orientation >= 5 {
			info.Width, info.Height = info.Height, info.Width
		}
	case "gif":
		frames, err := countGIFFrames(io.MultiReader(bytes.NewReader(head), r))
		if err != nil {
			return storage.MediaImage{}, nil
		}
		info.Frames, info.Animated = frames, frames > 1
	case "png", "webp":
	default:
		return storage.MediaImage{}, nil
	}
	return info, nil
}

// jpegOrientation finds the EXIF orientation (1–8) in a JPEG's APP1
// segment; 1 when there is none.
func jpegOrientation(b []byte) int {
	if len(b) < 4 || b[0] != 0xFF || b[1] != 0xD8 {
		return 1
	}
	i := 2
	for i+4 <= len(b) {
		if b[i] != 0xFF {
			return 1
		}
		marker := b[i+1]
		switch {
		case marker == 0xFF: // fill byte
			i++
			continue
		case marker == 0x01 || marker >= 0xD0 && marker <= 0xD8: // no length
			i += 2
			continue
		case marker == 0xDA || marker == 0xD9: // scan data: no EXIF after this
			return 1
		}
		size := int(b[i+2])<<8 | int(b[i+3])
		if size < 2 || i+2+size > len(b) {
			return 1
		}
		seg := b[i+4 : i+2+size]
		if marker == 0xE1 && len(seg) >= 6 && string(seg[:6]) == "Exif\x00\x00" {
			return tiffOrientation(seg[6:])
		}
		i += 2 + size
	}
	return 1
}

// tiffOrientation reads tag 0x0112 from a TIFF header's first IFD.
func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 1
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 1
	}
	if bo.Uint16(t[2:]) != 42 {
		return 1
	}
	off := int64(bo.Uint32(t[4:]))
	if off < 8 || off+2 > int64(len(t)) {
		return 1
	}
	n := int64(bo.Uint16(t[off:]))
	for j := int64(0); j < n; j++ {
		e := off + 2 + 12*j
		if e+12 > int64(len(t)) {
			return 1
		}
		tag, typ, count := bo.Uint16(t[e:]), bo.Uint16(t[e+2:]), bo.Uint32(t[e+4:])
		if tag == 0x0112 && typ == 3 && count == 1 {
			if v := int(bo.Uint16(t[e+8:])); v >= 1 && v <= 8 {
				return v
			}
			return 1
		}
	}
	return 1
}

// countGIFFrames walks a GIF's block structure, skipping pixel data, and
// counts its images, so that an animation's size is known before any
// frame is decompressed.
func countGIFFrames(r io.Reader) (int, error) {
	br := bufio.NewReader(r)
	var hdr [13]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return 0, err
	}
	if string(hdr[:3]) != "GIF" {
		return 0, errors.New("not a GIF")
	}
	if hdr[10]&0x80 != 0 {
		if _, err := br.Discard(3 << ((hdr[10] & 7) + 1)); err != nil {
			return 0, err
		}
	}
	skipSubBlocks := func() error {
		for {
			n, err := br.ReadByte()
			if err != nil {
				return err
			}
			if n == 0 {
				return nil
			}
			if _, err := br.Discard(int(n)); err != nil {
				return err
			}
		}
	}
	frames := 0
	for {
		b, err := br.ReadByte()
		if err != nil {
			return frames, err
		}
		switch b {
		case 0x21: // extension: label, then sub-blocks
			if _, err := br.ReadByte(); err != nil {
				return frames, err
			}
			if err := skipSubBlocks(); err != nil {
				return frames, err
			}
		case 0x2C: // image descriptor, optional local palette, LZW data
			var d [9]byte
			if _, err := io.ReadFull(br, d[:]); err != nil {
				return frames, err
			}
			if d[8]&0x80 != 0 {
				if _, err := br.Discard(3 << ((d[8] & 7) + 1)); err != nil {
					return frames, err
				}
			}
			if _, err := br.ReadByte(); err != nil { // LZW minimum code size
				return frames, err
			}
			if err := skipSubBlocks(); err != nil {
				return frames, err
			}
			frames++
		case 0x3B: // trailer
			return frames, nil
		default:
			return frames, errors.New("malformed GIF")
		}
	}
}

// target is one thumbnail to produce: output size, method, animation.
type target struct {
	Width, Height int
	Method        string
	Animated      bool
}

// thumbTarget turns a request into the thumbnail's actual size for an
// image of sw×sh (after orientation), never upscaling: "scale" fits the
// image inside the requested box, "crop" fills the box exactly and cuts
// what overflows; when the image is smaller than the request, "scale"
// keeps it whole and "crop" cuts the largest region of the requested
// aspect from it.
func thumbTarget(sw, sh, w, h int, method string) (int, int) {
	if method == "crop" {
		if w <= sw && h <= sh {
			return w, h
		}
		// Largest w:h rectangle inside sw×sh.
		if int64(w)*int64(sh) >= int64(h)*int64(sw) {
			return sw, max(1, int(int64(sw)*int64(h)/int64(w)))
		}
		return max(1, int(int64(sh)*int64(w)/int64(h))), sh
	}
	if w >= sw && h >= sh {
		return sw, sh
	}
	if int64(w)*int64(sh) <= int64(h)*int64(sw) {
		return w, max(1, int((int64(sh)*int64(w)+int64(sw)/2)/int64(sw)))
	}
	return max(1, int((int64(sw)*int64(h)+int64(sh)/2)/int64(sh))), h
}

// resizeDims is the size the image is resized to before any crop.
func (t target) resizeDims(sw, sh int) (int, int) {
	if t.Method != "crop" {
		return t.Width, t.Height
	}
	// Cover: scale so that both dimensions reach the target.
	if int64(t.Width)*int64(sh) >= int64(t.Height)*int64(sw) {
		return t.Width, max(t.Height, int((int64(sh)*int64(t.Width)+int64(sw)-1)/int64(sw)))
	}
	return max(t.Width, int((int64(sw)*int64(t.Height)+int64(sh)-1)/int64(sh))), t.Height
}

// decodeStatic decodes the first image of r, brings it upright (EXIF
// orientation) and, when it is much larger than needW×needH (after
// orientation), shrinks it cheaply to not much more than that, so that
// the final high-quality resize has little to do.
func decodeStatic(r io.Reader, info storage.MediaImage, needW, needH int) (image.Image, error) {
	rawW, rawH := info.Width, info.Height
	if info.Orientation >= 5 {
		rawW, rawH = rawH, rawW
	}
	if info.Orientation >= 5 {
		needW, needH = needH, needW
	}
	k := shrinkFactor(rawW, rawH, needW, needH)
	if info.Format == "jpeg" && k >= 8 {
		src, err := decodeJPEGEighth(r)
		if err == nil {
			if k/8 >= 2 {
				src = shrink(src, k/8)
			}
			return orient(src, info.Orientation), nil
		}
		var fb *fallback
		if !errors.As(err, &fb) {
			return nil, err
		}
		r = fb.r
	}
	src, _, err := image.Decode(r)
	if err != nil {
		return nil, err
	}
	if b := src.Bounds(); b.Dx() != rawW || b.Dy() != rawH || b.Min != (image.Point{}) {
		// A GIF's first frame may cover part of the screen only.
		canvas := image.NewNRGBA(image.Rect(0, 0, rawW, rawH))
		draw.Draw(canvas, src.Bounds(), src, src.Bounds().Min, draw.Src)
		src = canvas
	}
	if k >= 2 {
		src = shrink(src, k)
	}
	return orient(src, info.Orientation), nil
}

// maxReplay bounds the JPEG header bytes kept to hand a file the 1/8
// decoder does not handle to the full one (headers with EXIF, ICC and XMP
// segments run to a few hundred KiB; the decoder reads ahead 64 KiB).
const maxReplay = 4 << 20

// fallback is decodeJPEGEighth's answer for a JPEG it does not handle: r
// replays the file from its start.
type fallback struct{ r io.Reader }

func (*fallback) Error() string { return "mediaapi: JPEG needs a full decode" }

// decodeJPEGEighth decodes a baseline JPEG at 1/8 of its size from the
// DC coefficients alone, several times faster than a full decode (a
// 12-megapixel photograph: 71 ms against 173 ms). Other JPEGs come back
// as a *fallback error.
func decodeJPEGEighth(r io.Reader) (image.Image, error) {
	rec := &recorder{r: r}
	img, err := jpegdc.Decode(rec, func() { rec.stop = true; rec.buf = nil })
	if errors.Is(err, jpegdc.ErrUnsupported) && !rec.overflow && !rec.stop {
		return nil, &fallback{r: io.MultiReader(bytes.NewReader(rec.buf), r)}
	}
	return img, err
}

// recorder keeps what is read through it, up to maxReplay bytes, until
// stopped.
type recorder struct {
	r              io.Reader
	buf            []byte
	overflow, stop bool
}

func (c *recorder) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if !c.overflow && !c.stop {
		if len(c.buf)+n > maxReplay {
			c.overflow, c.buf = true, nil
		} else {
			c.buf = append(c.buf, p[:n]...)
		}
	}
	return n, err
}

// shrinkFactor is the integer factor by which a w×h image can be
// box-shrunk while staying at least 1.5 times needW×needH, which leaves
// the final resampling enough pixels for a sharp result and little work.
func shrinkFactor(w, h, needW, needH int) int {
	return min(2*w/(3*max(needW, 1)), 2*h/(3*max(needH, 1)))
}

// orient applies an EXIF orientation.
func orient(img image.Image, o int) image.Image {
	switch o {
	case 2:
		return imaging.FlipH(img)
	case 3:
		return imaging.Rotate180(img)
	case 4:
		return imaging.FlipV(img)
	case 5:
		return imaging.Transpose(img)
	case 6:
		return imaging.Rotate270(img)
	case 7:
		return imaging.Transverse(img)
	case 8:
		return imaging.Rotate90(img)
	}
	return img
}

// shrink reduces img by an integer factor k, averaging k×k blocks. JPEG
// output (YCbCr) is averaged on its own planes, which is several times
// faster than a general resampler at this stage.
func shrink(img image.Image, k int) image.Image {
	b := img.Bounds()
	w, h := b.Dx()/k, b.Dy()/k
	if w < 1 || h < 1 {
		return img
	}
	var (
		pix    []uint8
		stride int
	)
	switch src := img.(type) {
	case *image.RGBA:
		pix, stride = src.Pix[src.PixOffset(b.Min.X, b.Min.Y):], src.Stride
	case *image.NRGBA:
		pix, stride = src.Pix[src.PixOffset(b.Min.X, b.Min.Y):], src.Stride
	}
	if pix != nil {
		return shrinkPix(img, pix, stride, w, h, k)
	}
	yc, ok := img.(*image.YCbCr)
	if !ok {
		return imaging.Resize(img, w, h, imaging.Box)
	}
	hs, vs := 1, 1
	switch yc.SubsampleRatio {
	case image.YCbCrSubsampleRatio422:
		hs = 2
	case image.YCbCrSubsampleRatio420:
		hs, vs = 2, 2
	case image.YCbCrSubsampleRatio440:
		vs = 2
	case image.YCbCrSubsampleRatio411:
		hs = 4
	case image.YCbCrSubsampleRatio410:
		hs, vs = 4, 2
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	rows := func(from, to int) {
		for oy := from; oy < to; oy++ {
			y0 := b.Min.Y + oy*k
			for ox := 0; ox < w; ox++ {
				x0 := b.Min.X + ox*k
				var sy int
				for y := y0; y < y0+k; y++ {
					i := yc.YOffset(x0, y)
					for _, v := range yc.Y[i : i+k] {
						sy += int(v)
					}
				}
				var scb, scr, n int
				for cy := y0 / vs; cy <= (y0+k-1)/vs; cy++ {
					ci := yc.COffset(x0, cy*vs)
					cols := (x0+k-1)/hs - x0/hs + 1
					for c := 0; c < cols; c++ {
						scb += int(yc.Cb[ci+c])
						scr += int(yc.Cr[ci+c])
						n++
					}
				}
				r, g, bl := color.YCbCrToRGB(uint8(sy/(k*k)), uint8(scb/n), uint8(scr/n))
				p := dst.PixOffset(ox, oy)
				dst.Pix[p], dst.Pix[p+1], dst.Pix[p+2], dst.Pix[p+3] = r, g, bl, 0xFF
			}
		}
	}
	inParallel(h, rows)
	return dst
}

// shrinkPix box-averages 4-byte pixels (RGBA or NRGBA; the result keeps
// the source's kind, so premultiplication is preserved).
func shrinkPix(img image.Image, pix []uint8, stride, w, h, k int) image.Image {
	var out []uint8
	var dst image.Image
	if _, ok := img.(*image.RGBA); ok {
		d := image.NewRGBA(image.Rect(0, 0, w, h))
		out, dst = d.Pix, d
	} else {
		d := image.NewNRGBA(image.Rect(0, 0, w, h))
		out, dst = d.Pix, d
	}
	area := k * k
	inParallel(h, func(from, to int) {
		for oy := from; oy < to; oy++ {
			for ox := 0; ox < w; ox++ {
				var r, g, b, a int
				for y := oy * k; y < oy*k+k; y++ {
					row := pix[y*stride+ox*k*4 : y*stride+(ox*k+k)*4]
					for i := 0; i < len(row); i += 4 {
						r += int(row[i])
						g += int(row[i+1])
						b += int(row[i+2])
						a += int(row[i+3])
					}
				}
				o := oy*w*4 + ox*4
				out[o], out[o+1], out[o+2], out[o+3] = uint8(r/area), uint8(g/area), uint8(b/area), uint8(a/area)
			}
		}
	})
	return dst
}

// inParallel splits rows [0, h) between two goroutines (the work is
// memory-bound; more rarely helps) and waits for both.
func inParallel(h int, rows func(from, to int)) {
	const workers = 2
	var wg sync.WaitGroup
	step := (h + workers - 1) / workers
	for from := 0; from < h; from += step {
		wg.Add(1)
		go func(from, to int) {
			defer wg.Done()
			rows(from, to)
		}(from, min(from+step, h))
	}
	wg.Wait()
}

// renderAll renders several targets from one upright source, largest
// first, each from an intermediate shrunk close to its size, so that the
// small sizes cost almost nothing.
func renderAll(src image.Image, targets []target) []image.Image {
	order := make([]int, len(targets))
	for i := range order {
		order[i] = i
	}
	sb := src.Bounds()
	need := func(t target) (int, int) { return t.resizeDims(sb.Dx(), sb.Dy()) }
	slices.SortFunc(order, func(a, b int) int {
		wa, ha := need(targets[a])
		wb, hb := need(targets[b])
		return wb*hb - wa*ha
	})
	out := make([]image.Image, len(targets))
	cur := src
	for _, i := range order {
		w, h := need(targets[i])
		cb := cur.Bounds()
		if k := shrinkFactor(cb.Dx(), cb.Dy(), w, h); k >= 2 {
			cur = shrink(cur, k)
		}
		out[i] = render(cur, targets[i])
	}
	return out
}

// render produces one thumbnail from an upright source.
func render(src image.Image, t target) image.Image {
	b := src.Bounds()
	if t.Method == "crop" {
		if b.Dx() == t.Width && b.Dy() == t.Height {
			return src
		}
		return imaging.Fill(src, t.Width, t.Height, imaging.Center, imaging.Lanczos)
	}
	if b.Dx() == t.Width && b.Dy() == t.Height {
		return src
	}
	return imaging.Resize(src, t.Width, t.Height, imaging.Lanczos)
}

// isOpaque reports whether an image has no transparency.
func isOpaque(img image.Image) bool {
	if o, ok := img.(interface{ Opaque() bool }); ok {
		return o.Opaque()
	}
	return false
}

// encodeStatic writes a thumbnail: JPEG for opaque photographs (JPEG and
// WebP sources), PNG otherwise. Re-encoding is what strips the source's
// metadata (EXIF, GPS, XMP, ICC).
func encodeStatic(img image.Image, format string) ([]byte, string, error) {
	var buf bytes.Buffer
	if (format == "jpeg" || format == "webp") && isOpaque(img) {
		if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85}); err != nil {
			return nil, "", err
		}
		return buf.Bytes(), "image/jpeg", nil
	}
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(&buf, img); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), "image/png", nil
}

// renderAnimated composes every frame of a GIF (honouring disposal),
// resizes it and encodes the result as an animated GIF of full frames.
func renderAnimated(g *gif.GIF, t target) ([]byte, error) {
	sw, sh := g.Config.Width, g.Config.Height
	if sw <= 0 || sh <= 0 || len(g.Image) == 0 {
		return nil, errors.New("empty GIF")
	}
	canvas := image.NewNRGBA(image.Rect(0, 0, sw, sh))
	out := &gif.GIF{LoopCount: g.LoopCount, Config: image.Config{Width: t.Width, Height: t.Height}}
	for i, fr := range g.Image {
		disposal := byte(0)
		if i < len(g.Disposal) {
			disposal = g.Disposal[i]
		}
		var saved *image.NRGBA
		if disposal == gif.DisposalPrevious {
			saved = image.NewNRGBA(canvas.Rect)
			copy(saved.Pix, canvas.Pix)
		}
		draw.Draw(canvas, fr.Bounds(), fr, fr.Bounds().Min, draw.Over)
		frame := render(canvas, t)
		pal := paletteWithTransparency(fr.Palette)
		pm := image.NewPaletted(image.Rect(0, 0, t.Width, t.Height), pal)
		newQuantizer(pal).draw(pm, frame)
		out.Image = append(out.Image, pm)
		delay := 0
		if i < len(g.Delay) {
			delay = g.Delay[i]
		}
		out.Delay = append(out.Delay, delay)
		// Each output frame is whole: clear before drawing the next.
		out.Disposal = append(out.Disposal, gif.DisposalBackground)
		switch disposal {
		case gif.DisposalBackground:
			draw.Draw(canvas, fr.Bounds(), image.Transparent, image.Point{}, draw.Src)
		case gif.DisposalPrevious:
			canvas = saved
		}
	}
	var buf bytes.Buffer
	if err := gif.EncodeAll(&buf, out); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// paletteWithTransparency returns p with a fully transparent entry.
func paletteWithTransparency(p color.Palette) color.Palette {
	for _, c := range p {
		if _, _, _, a := c.RGBA(); a == 0 {
			return p
		}
	}
	if len(p) >= 256 {
		return p
	}
	out := make(color.Palette, len(p), len(p)+1)
	copy(out, p)
	return append(out, color.NRGBA{})
}

// quantizer maps colours to a palette through a cache of 5 bits per
// channel, which keeps the nearest-colour search off the per-pixel path.
type quantizer struct {
	pal   color.Palette
	cache []int16
}

func newQuantizer(p color.Palette) *quantizer {
	q := &quantizer{pal: p, cache: make([]int16, 1<<16)}
	for i := range q.cache {
		q.cache[i] = -1
	}
	return q
}

func (q *quantizer) draw(dst *image.Paletted, src image.Image) {
	b := dst.Rect
	sb := src.Bounds()
	nrgba, _ := src.(*image.NRGBA)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			var c color.NRGBA
			if nrgba != nil {
				i := nrgba.PixOffset(sb.Min.X+x, sb.Min.Y+y)
				c = color.NRGBA{R: nrgba.Pix[i], G: nrgba.Pix[i+1], B: nrgba.Pix[i+2], A: nrgba.Pix[i+3]}
			} else {
				c = color.NRGBAModel.Convert(src.At(sb.Min.X+x, sb.Min.Y+y)).(color.NRGBA)
			}
			if c.A < 128 {
				c = color.NRGBA{}
			} else {
				c.A = 0xFF
			}
			k := int(c.R>>3)<<10 | int(c.G>>3)<<5 | int(c.B>>3)
			if c.A == 0 {
				k = 1 << 15
			}
			idx := q.cache[k]
			if idx < 0 {
				idx = int16(q.pal.Index(c))
				q.cache[k] = idx
			}
			dst.Pix[dst.PixOffset(x, y)] = uint8(idx)
		}
	}
}
