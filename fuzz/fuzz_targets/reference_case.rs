//! The reference-case parser: any text is parsed without a panic, and a case that parses is
//! replayed without one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(case) = downhill::reference::parse(text) {
        let _ = downhill::reference::replay(&case);
    }
});
