//! Fuzz target: open arbitrary bytes as a store and exercise what opens.
//! It must never panic: opening fails only with `Error::Corrupted`, and a
//! store that opens can be scanned, queried, deleted from, written to,
//! closed and reopened. The input layout and the checks are in
//! `tests/engine/open_image.rs`, shared with the stable proptests in
//! `tests/engine/model.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // the seed encoder is used by the tests only
#[path = "../../tests/engine/open_image.rs"]
mod open_image;

fuzz_target!(|input: &[u8]| {
    let (images, level) = open_image::images_from_input(input);
    open_image::open_and_exercise(&images, level);
});
