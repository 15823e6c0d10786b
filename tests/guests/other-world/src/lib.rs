//! A valid component of another world (`other:thing/thing@1.0.0`): the omnigate host
//! must refuse to load it as a channel plugin.

wit_bindgen::generate!({
    inline: "
        package other:thing@1.0.0;
        world thing {
            export run: func() -> u32;
        }
    ",
});

struct Thing;

impl Guest for Thing {
    fn run() -> u32 {
        42
    }
}

export!(Thing);
