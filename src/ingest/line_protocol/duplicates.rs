//! Repeated keys within one line: this file owns the rules that a repeated tag key is an
//! error and that a repeated field key keeps its last value (at its first place), as in
//! InfluxDB 1.x. Short lines are checked pairwise without allocating; long ones are sorted
//! through the parser's reused index scratch, so a hostile line can never cost quadratic
//! time. It must never allocate beyond that scratch.

use super::value::FieldValue;

/// Vectors of at most this many entries are checked for repeated keys pairwise; longer ones
/// are sorted through `order` so a hostile line cannot cost quadratic time.
const PAIRWISE_LIMIT: usize = 16;

/// Key equality with cheap rejections first: keys of one line often share a length and a
/// prefix (`usage_user`, `usage_idle`), rarely a last byte.
#[inline(always)]
fn key_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.last() == b.last() && a == b
}

/// Index of the first entry whose key repeats an earlier one, checking pairwise (for short
/// vectors only).
#[inline(always)]
fn first_repeat<T>(items: &[(&[u8], T)]) -> Option<usize> {
    for j in 1..items.len() {
        let key = items[j].0;
        for earlier in &items[..j] {
            if key_eq(earlier.0, key) {
                return Some(j);
            }
        }
    }
    None
}

/// The first repeated tag key, if any. InfluxDB rejects such lines ("duplicate tags").
#[inline(always)]
pub(super) fn check_tags<'a>(
    tags: &[(&'a [u8], &'a [u8])],
    order: &mut Vec<u32>,
) -> Result<(), &'a [u8]> {
    if tags.len() <= PAIRWISE_LIMIT {
        return match first_repeat(tags) {
            Some(j) => Err(tags[j].0),
            None => Ok(()),
        };
    }
    check_many_tags(tags, order)
}

#[inline(never)]
fn check_many_tags<'a>(
    tags: &[(&'a [u8], &'a [u8])],
    order: &mut Vec<u32>,
) -> Result<(), &'a [u8]> {
    let n = tags.len();
    fill_order(order, n);
    order.sort_unstable_by(|&x, &y| tags[x as usize].0.cmp(tags[y as usize].0));
    match order
        .windows(2)
        .find(|w| tags[w[0] as usize].0 == tags[w[1] as usize].0)
    {
        Some(w) => Err(tags[w[0] as usize].0),
        None => Ok(()),
    }
}

fn fill_order(order: &mut Vec<u32>, n: usize) {
    order.clear();
    // n is bounded by the body length, which the server caps far below 4 GiB.
    order.extend((0..n).map(|x| x as u32));
}

/// Makes field keys unique: a repeated key keeps its last value, at the place where the key
/// first appeared (InfluxDB builds a map from the fields, so the last value wins there too).
#[inline(always)]
pub(super) fn dedup_fields(fields: &mut Vec<(&[u8], FieldValue<'_>)>, order: &mut Vec<u32>) {
    let n = fields.len();
    if n < 2 || (n <= PAIRWISE_LIMIT && first_repeat(fields).is_none()) {
        return;
    }
    dedup_repeated_fields(fields, order);
}

#[inline(never)]
fn dedup_repeated_fields(fields: &mut Vec<(&[u8], FieldValue<'_>)>, order: &mut Vec<u32>) {
    let n = fields.len();
    if n <= PAIRWISE_LIMIT {
        let mut kept = 1;
        for r in 1..n {
            let (key, value) = fields[r];
            match fields[..kept].iter().position(|f| key_eq(f.0, key)) {
                Some(p) => fields[p].1 = value,
                None => {
                    fields[kept] = (key, value);
                    kept += 1;
                }
            }
        }
        fields.truncate(kept);
        return;
    }
    // Sort indices by (key, position); within each run of equal keys the first index is
    // where the key stays and the last holds the value to keep. Field keys are never empty,
    // so an emptied key marks an entry to drop.
    fill_order(order, n);
    order.sort_unstable_by(|&x, &y| {
        fields[x as usize]
            .0
            .cmp(fields[y as usize].0)
            .then(x.cmp(&y))
    });
    let mut run_start = 0;
    while run_start < n {
        let first = order[run_start] as usize;
        let mut run_end = run_start + 1;
        while run_end < n && fields[order[run_end] as usize].0 == fields[first].0 {
            run_end += 1;
        }
        if run_end - run_start > 1 {
            let last = order[run_end - 1] as usize;
            fields[first].1 = fields[last].1;
            for &dup in &order[run_start + 1..run_end] {
                fields[dup as usize].0 = &[];
            }
        }
        run_start = run_end;
    }
    fields.retain(|f| !f.0.is_empty());
}
