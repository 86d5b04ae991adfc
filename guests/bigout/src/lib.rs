//! Hostile: answers with 12 MiB (the output cap must stop it).
wit_bindgen::generate!({ path: "../../wit", world: "handler" });

struct BigOut;

impl Guest for BigOut {
    fn handle(_ctx: CallContext, _input: Vec<u8>) -> Result<Vec<u8>, Error> {
        Ok(vec![b'x'; 12 << 20])
    }
}

export!(BigOut);
