//! kcred controller.
