//! Reading built nacre images back, without root: `inspect` (what is in an image) and `diff`
//! (where two images differ, down to the GPT field, the partition byte range, the ESP file and
//! the UKI's PE section: what a reproducibility failure needs).

pub mod diff;
pub mod inspect;
pub mod verity;
