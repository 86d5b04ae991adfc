//! Hostile: looks for ambient authority — environment, arguments, files,
//! the working directory — and reports what it found as the response text
//! (field 1 of a message), so a test can check that it found nothing.
wit_bindgen::generate!({ path: "../../wit", world: "handler" });

struct Snoop;

impl Guest for Snoop {
    fn handle(_ctx: CallContext, _input: Vec<u8>) -> Result<Vec<u8>, Error> {
        let mut found = Vec::new();
        let env = std::env::vars().count();
        if env > 0 {
            found.push(format!("env:{env}"));
        }
        let args = std::env::args().count();
        if args > 0 {
            found.push(format!("args:{args}"));
        }
        for path in ["/etc/passwd", "/", ".", "Cargo.toml", "/proc/self/environ"] {
            if std::fs::read(path).is_ok() || std::fs::read_dir(path).is_ok() {
                found.push(format!("file:{path}"));
            }
        }
        if std::fs::write("/tmp/collector-snoop", b"x").is_ok() {
            found.push("write:/tmp".into());
        }
        let text = found.join(",");
        // A protobuf message with field 1 (string) = text.
        let mut out = vec![0x0a];
        let mut len = text.len();
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(text.as_bytes());
        Ok(out)
    }
}

export!(Snoop);
