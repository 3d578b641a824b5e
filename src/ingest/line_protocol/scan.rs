//! Byte classification and word-at-a-time scanning for the line protocol parser: this file
//! owns the answer to "where does this name, value, line or run of digits end?". Its helpers
//! run for every byte of every body, so they stay `#[inline(always)]`, look bytes up in one
//! 256-entry table, and test eight bytes per step in plain integer arithmetic (SWAR). It must
//! never allocate, build errors, or know what a point is: it returns offsets and digit values
//! only, and never reads past the slice it is given.

pub(super) const STOP_MEASUREMENT: u8 = 1; // , space \ \n \r
pub(super) const STOP_KEY: u8 = 2; // , space = \ \n \r   (tag keys, tag values, field keys)
pub(super) const STOP_VALUE: u8 = 4; // , space \n \r     (unquoted field values)
const WHITESPACE: u8 = 8; // space \t \0       (InfluxDB's skipWhitespace set)

pub(super) static CLASS: [u8; 256] = build_class();

const fn build_class() -> [u8; 256] {
    let mut t = [0u8; 256];
    t[b',' as usize] = STOP_MEASUREMENT | STOP_KEY | STOP_VALUE;
    t[b' ' as usize] = STOP_MEASUREMENT | STOP_KEY | STOP_VALUE | WHITESPACE;
    t[b'\\' as usize] = STOP_MEASUREMENT | STOP_KEY;
    t[b'\n' as usize] = STOP_MEASUREMENT | STOP_KEY | STOP_VALUE;
    t[b'\r' as usize] = STOP_MEASUREMENT | STOP_KEY | STOP_VALUE;
    t[b'=' as usize] = STOP_KEY;
    t[b'\t' as usize] = WHITESPACE;
    t[0] = WHITESPACE;
    t
}

/// Index of the first byte at or after `from` whose class intersects `mask`, or `b.len()`.
#[inline(always)]
pub(super) fn find_class(b: &[u8], from: usize, mask: u8) -> usize {
    match b.get(from..) {
        Some(rest) => match rest.iter().position(|&c| CLASS[usize::from(c)] & mask != 0) {
            Some(p) => from + p,
            None => b.len(),
        },
        None => b.len(),
    }
}

#[inline(always)]
pub(super) fn skip_whitespace(b: &[u8], from: usize) -> usize {
    // Nearly always there is nothing to skip.
    if let Some(&c) = b.get(from)
        && CLASS[usize::from(c)] & WHITESPACE == 0
    {
        return from;
    }
    match b.get(from..) {
        Some(rest) => match rest
            .iter()
            .position(|&c| CLASS[usize::from(c)] & WHITESPACE == 0)
        {
            Some(p) => from + p,
            None => b.len(),
        },
        None => b.len(),
    }
}

/// A `\r` ends the line only when it is the last byte before `\n` or before the end of the
/// body; elsewhere it is an ordinary byte.
#[inline(always)]
pub(super) fn cr_ends_line(b: &[u8], i: usize) -> bool {
    b.get(i + 1).is_none_or(|&c| c == b'\n')
}

#[inline(always)]
pub(super) fn is_line_end(b: &[u8], i: usize) -> bool {
    match b.get(i) {
        None => true,
        Some(b'\n') => true,
        Some(b'\r') => cr_ends_line(b, i),
        Some(_) => false,
    }
}

/// True at the end of an unquoted value: `,`, space, line end or end of body.
#[inline(always)]
pub(super) fn is_value_end(b: &[u8], i: usize) -> bool {
    match b.get(i) {
        None | Some(b',') | Some(b' ') | Some(b'\n') => true,
        Some(b'\r') => cr_ends_line(b, i),
        Some(_) => false,
    }
}

// SWAR ("SIMD within a register") helpers: eight bytes per step in plain integer arithmetic,
// since `unsafe` (and so explicit SIMD) is off the table. Names are short, but even a 4-byte
// key is found in one step instead of five table lookups.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in every byte of `x` equal to `c`. Borrows can set bits above a real match,
/// never below one, so the lowest set bit is exact.
#[inline(always)]
fn bytes_equal(x: u64, c: u8) -> u64 {
    let t = x ^ (ONES * u64::from(c));
    t.wrapping_sub(ONES) & !t & HIGHS
}

/// High bit set in every byte of `x` below `n` (n <= 0x80); lowest set bit exact as above.
#[inline(always)]
fn bytes_below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS
}

/// Index of the first byte at or after `i` in the stop set of `mask` (STOP_MEASUREMENT or
/// STOP_KEY), or `b.len()`. The word test flags every byte below 0x21 (space, `\n`, `\r`, but
/// also tabs and other control bytes) plus `,`, `\` and, for keys, `=`; the table then rules
/// out the rare false candidates.
#[inline(always)]
pub(super) fn find_stop(b: &[u8], mut i: usize, mask: u8) -> usize {
    while let Some(chunk) = b.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let x = u64::from_le_bytes(*chunk);
        let mut hits = bytes_below(x, 0x21) | bytes_equal(x, b',') | bytes_equal(x, b'\\');
        if mask & STOP_MEASUREMENT == 0 {
            hits |= bytes_equal(x, b'=');
        }
        if hits == 0 {
            i += 8;
            continue;
        }
        let j = i + (hits.trailing_zeros() / 8) as usize;
        if b.get(j).is_some_and(|&c| CLASS[usize::from(c)] & mask != 0) {
            return j;
        }
        i = j + 1;
    }
    find_class(b, i, mask)
}

/// Value of eight ASCII digits, the first in the lowest byte (three multiplies instead of
/// eight multiply-adds).
#[inline(always)]
fn eight_digits_value(x: u64) -> u64 {
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 100 + (1_000_000 << 32);
    const MUL2: u64 = 1 + (10_000 << 32);
    let x = x.wrapping_sub(0x3030_3030_3030_3030);
    let x = x.wrapping_mul(10).wrapping_add(x >> 8);
    (x & MASK)
        .wrapping_mul(MUL1)
        .wrapping_add(((x >> 16) & MASK).wrapping_mul(MUL2))
        >> 32
}

/// Powers of ten for folding a partial word of digits into an accumulator.
const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// Scans ASCII digits from `i`, folding them into `acc` (wrapping: callers only trust the
/// value when at most 19 digits went in). Returns the end of the digits and the value.
/// Works a word at a time: the lowest non-digit byte of a word is found exactly (carries and
/// borrows only travel upwards from it), and a partial run of digits is shifted to the top of
/// the word and padded with '0's so the eight-digit conversion applies.
#[inline(always)]
pub(super) fn scan_digits(b: &[u8], mut i: usize, mut acc: u64) -> (usize, u64) {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    while let Some(chunk) = b.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let x = u64::from_le_bytes(*chunk);
        let non_digits = (x.wrapping_add(0x4646_4646_4646_4646) | x.wrapping_sub(ZEROS)) & HIGHS;
        if non_digits == 0 {
            acc = acc
                .wrapping_mul(100_000_000)
                .wrapping_add(eight_digits_value(x));
            i += 8;
            continue;
        }
        let n = (non_digits.trailing_zeros() / 8) as usize;
        if n > 0 {
            let shift = 8 * (8 - n as u32);
            let padded = (x << shift) | (ZEROS >> (64 - shift));
            acc = acc
                .wrapping_mul(POW10_U64[n])
                .wrapping_add(eight_digits_value(padded));
        }
        return (i + n, acc);
    }
    while let Some(&c) = b.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        acc = acc.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    (i, acc)
}

/// End of a measurement or key starting at `i`: the first byte of `mask`'s stop set that is
/// not preceded by a backslash, or the line end. InfluxDB 1.x decides "escaped" by looking at
/// the previous byte only (`buf[i-1] != '\\'`), so after any run of backslashes the next byte
/// is ordinary: `a\\,b` is one name. `\n` is the exception: it always ends the line.
#[inline(always)]
pub(super) fn token_end(b: &[u8], mut i: usize, mask: u8) -> usize {
    let n = b.len();
    loop {
        i = find_stop(b, i, mask);
        match b.get(i) {
            None => return n,
            Some(b'\\') => {
                let mut j = i + 1;
                while b.get(j) == Some(&b'\\') {
                    j += 1;
                }
                i = match b.get(j) {
                    Some(&c) if c != b'\n' => j + 1,
                    _ => j,
                };
            }
            Some(b'\r') if !cr_ends_line(b, i) => i += 1,
            Some(_) => return i,
        }
    }
}

/// `find_class(.., STOP_VALUE)` stops at every `\r`; one that does not end the line belongs
/// to the (then invalid) value, so include it and whatever follows up to the real end.
#[inline(always)]
pub(super) fn extend_over_inner_cr(b: &[u8], mut i: usize) -> usize {
    while b.get(i) == Some(&b'\r') && !cr_ends_line(b, i) {
        i = find_class(b, i + 1, STOP_VALUE);
    }
    i
}
