//! Routes libav's own log lines into `tracing` instead of raw stderr.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::Mutex;

use ffmpeg_next::ffi;

/// Installs the callback; libav messages become `tracing` events under the `libav` target.
pub fn route_to_tracing() {
    // SAFETY: the callback is a plain function that only formats into a stack buffer.
    unsafe {
        ffi::av_log_set_level(ffi::AV_LOG_WARNING);
        ffi::av_log_set_callback(Some(callback));
    }
}

unsafe extern "C" fn callback(
    avcl: *mut c_void,
    level: c_int,
    fmt: *const c_char,
    args: *mut ffi::__va_list_tag,
) {
    if level > unsafe { ffi::av_log_get_level() } {
        return;
    }
    let mut line = [0 as c_char; 1024];
    let mut print_prefix: c_int = 1;
    // SAFETY: libav formats its own va_list into our buffer, NUL-terminated, within its size.
    let text = unsafe {
        ffi::av_log_format_line2(
            avcl,
            level,
            fmt,
            args,
            line.as_mut_ptr(),
            line.len() as c_int,
            &mut print_prefix,
        );
        CStr::from_ptr(line.as_ptr()).to_string_lossy()
    };
    let text = text.trim_end();
    if text.is_empty() || repeated(text) {
        return;
    }
    emit(level, text);
}

/// True when `text` repeats the previous line: a damaged stream makes libav say the same
/// thing for every packet. The count is logged once the message changes.
fn repeated(text: &str) -> bool {
    static LAST: Mutex<(String, u64)> = Mutex::new((String::new(), 0));
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if last.0 == text {
        last.1 += 1;
        return true;
    }
    if last.1 > 0 {
        tracing::warn!(target: "libav", "last message repeated {} more times", last.1);
    }
    *last = (text.to_owned(), 0);
    false
}

fn emit(level: c_int, text: &str) {
    match level {
        l if l <= ffi::AV_LOG_ERROR => tracing::error!(target: "libav", "{text}"),
        l if l <= ffi::AV_LOG_WARNING => tracing::warn!(target: "libav", "{text}"),
        l if l <= ffi::AV_LOG_INFO => tracing::info!(target: "libav", "{text}"),
        _ => tracing::debug!(target: "libav", "{text}"),
    }
}
