#!/usr/bin/python3
"""The desktop's side of the session bus for the desktop e2e, so the app's tray and
notifications are observed the way a real desktop sees them.

`serve STATE_FILE` owns:
  - org.kde.StatusNotifierWatcher (+ a registered host), where libayatana-appindicator registers
    the app's tray item (StatusNotifierItem);
  - org.freedesktop.Notifications, where the notification plugin (notify-rust) sends Notify.
It writes what it saw to STATE_FILE as JSON: {"items": [...], "notifications": [...]}.

`tray` prints, as JSON, the registered item's properties, its icon file and the colour inside the
icon's circle, and the labels of its menu.
`click LABEL` sends the dbusmenu "clicked" event to the menu item with that label (what a panel
does when the user picks it).
`mapped TITLE` prints how many X windows with TITLE in their title exist and are viewable.
`close TITLE` sends WM_DELETE_WINDOW to the top-level X window whose title contains TITLE (what a
window manager does when the user clicks the close button).

Uses Debian's python3-dbus, python3-gi and python3-xlib; run it with /usr/bin/python3.
"""

import json
import os
import subprocess
import sys
import time

import dbus
import dbus.service

WATCHER = "org.kde.StatusNotifierWatcher"
ITEM = "org.kde.StatusNotifierItem"
MENU = "com.canonical.dbusmenu"
NOTIFICATIONS = "org.freedesktop.Notifications"


class State:
    def __init__(self, path):
        self.path = path
        self.items = []
        self.notifications = []
        self.save()

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"items": self.items, "notifications": self.notifications}, f)
        os.replace(tmp, self.path)


class Watcher(dbus.service.Object):
    def __init__(self, bus, state):
        super().__init__(bus, "/StatusNotifierWatcher")
        self.state = state

    @dbus.service.method(WATCHER, in_signature="s", out_signature="", sender_keyword="sender")
    def RegisterStatusNotifierItem(self, service, sender=None):
        # appindicator passes its object path; the bus name is the caller.
        path = service if service.startswith("/") else "/StatusNotifierItem"
        name = sender if service.startswith("/") else service
        entry = f"{name}{path}"
        if entry not in self.state.items:
            self.state.items.append(entry)
            self.state.save()
        self.StatusNotifierItemRegistered(entry)

    @dbus.service.method(WATCHER, in_signature="s", out_signature="")
    def RegisterStatusNotifierHost(self, service):
        pass

    @dbus.service.signal(WATCHER, signature="s")
    def StatusNotifierItemRegistered(self, service):
        pass

    @dbus.service.signal(WATCHER, signature="s")
    def StatusNotifierItemUnregistered(self, service):
        pass

    @dbus.service.signal(WATCHER, signature="")
    def StatusNotifierHostRegistered(self):
        pass

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="ss", out_signature="v")
    def Get(self, interface, prop):
        return self.GetAll(interface)[prop]

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="s", out_signature="a{sv}")
    def GetAll(self, interface):
        return {
            "RegisteredStatusNotifierItems": dbus.Array(self.state.items, signature="s"),
            "IsStatusNotifierHostRegistered": dbus.Boolean(True),
            "ProtocolVersion": dbus.Int32(0),
        }


class Notifications(dbus.service.Object):
    def __init__(self, bus, state):
        super().__init__(bus, "/org/freedesktop/Notifications")
        self.state = state
        self.next_id = 1

    @dbus.service.method(NOTIFICATIONS, in_signature="susssasa{sv}i", out_signature="u")
    def Notify(self, app_name, replaces_id, icon, summary, body, actions, hints, timeout):
        nid = self.next_id
        self.next_id += 1
        self.state.notifications.append(
            {"id": nid, "app": str(app_name), "summary": str(summary), "body": str(body),
             "at": time.time()}
        )
        self.state.save()
        return dbus.UInt32(nid)

    @dbus.service.method(NOTIFICATIONS, in_signature="", out_signature="as")
    def GetCapabilities(self):
        return dbus.Array(["body"], signature="s")

    @dbus.service.method(NOTIFICATIONS, in_signature="u", out_signature="")
    def CloseNotification(self, nid):
        self.NotificationClosed(nid, 3)

    @dbus.service.method(NOTIFICATIONS, in_signature="", out_signature="ssss")
    def GetServerInformation(self):
        return ("e2e-host", "collisionos", "1.0", "1.2")

    @dbus.service.signal(NOTIFICATIONS, signature="uu")
    def NotificationClosed(self, nid, reason):
        pass

    @dbus.service.signal(NOTIFICATIONS, signature="us")
    def ActionInvoked(self, nid, action):
        pass


def serve(state_path):
    from dbus.mainloop.glib import DBusGMainLoop
    from gi.repository import GLib

    DBusGMainLoop(set_as_default=True)
    bus = dbus.SessionBus()
    state = State(state_path)
    keep = [
        dbus.service.BusName(WATCHER, bus, do_not_queue=True),
        dbus.service.BusName(NOTIFICATIONS, bus, do_not_queue=True),
        Watcher(bus, state),
        Notifications(bus, state),
    ]
    # The host a panel would register; appindicator checks that one exists.
    dbus.service.BusName("org.kde.StatusNotifierHost-e2e", bus, do_not_queue=True)
    print("ready", flush=True)
    GLib.MainLoop().run()
    del keep


def item():
    bus = dbus.SessionBus()
    watcher = bus.get_object(WATCHER, "/StatusNotifierWatcher")
    items = watcher.Get(WATCHER, "RegisteredStatusNotifierItems",
                        dbus_interface=dbus.PROPERTIES_IFACE)
    if not items:
        return bus, None
    entry = str(items[-1])
    slash = entry.index("/")
    return bus, (entry[:slash], entry[slash:])


def menu_layout(bus, name, menu_path):
    menu = bus.get_object(name, menu_path)
    _, layout = menu.GetLayout(0, -1, ["label", "visible", "enabled"], dbus_interface=MENU)
    entries = []

    def walk(node):
        nid, props, children = node
        if nid != 0 and "label" in props:  # 0 is the menu itself
            entries.append({"id": int(nid), "label": str(props["label"]).replace("_", "")})
        for child in children:
            walk(child)

    walk(layout)
    return menu, entries


def pixel(path, x, y):
    out = subprocess.run(
        ["convert", path, "-format", f"%[fx:int(255*p{{{x},{y}}}.r)],%[fx:int(255*p{{{x},{y}}}.g)],"
         f"%[fx:int(255*p{{{x},{y}}}.b)],%[fx:int(255*p{{{x},{y}}}.a)]", "info:"],
        check=True, capture_output=True, text=True,
    ).stdout
    return [int(v) for v in out.strip().split(",")]


def tray():
    bus, found = item()
    if found is None:
        print(json.dumps({"registered": False}))
        return
    name, path = found
    obj = bus.get_object(name, path)
    props = obj.GetAll(ITEM, dbus_interface=dbus.PROPERTIES_IFACE)
    icon_name = str(props.get("IconName", ""))
    theme_path = str(props.get("IconThemePath", ""))
    icon_file = None
    for candidate in (icon_name, os.path.join(theme_path, icon_name),
                      os.path.join(theme_path, icon_name + ".png")):
        if candidate and os.path.isfile(candidate):
            icon_file = candidate
            break
    info = {
        "registered": True,
        "service": name,
        "path": path,
        "id": str(props.get("Id", "")),
        "status": str(props.get("Status", "")),
        "icon_name": icon_name,
        "icon_file": icon_file,
        "menu": str(props.get("Menu", "")),
    }
    if icon_file:
        # Inside the circle, above the pulse line (see icons/tray.svg), at any icon size.
        size = subprocess.run(["identify", "-format", "%w", icon_file], check=True,
                              capture_output=True, text=True).stdout.strip()
        s = int(size)
        info["colour"] = pixel(icon_file, s // 2, s * 10 // 64)
    if info["menu"]:
        _, entries = menu_layout(bus, name, info["menu"])
        info["menu_labels"] = [e["label"] for e in entries]
    print(json.dumps(info))


def click(label):
    bus, found = item()
    if found is None:
        sys.exit("no tray item registered")
    name, path = found
    obj = bus.get_object(name, path)
    menu_path = obj.Get(ITEM, "Menu", dbus_interface=dbus.PROPERTIES_IFACE)
    menu, entries = menu_layout(bus, name, menu_path)
    for e in entries:
        if e["label"] == label:
            menu.AboutToShow(dbus.Int32(0), dbus_interface=MENU)
            menu.Event(dbus.Int32(e["id"]), "clicked", dbus.String("", variant_level=1),
                       dbus.UInt32(int(time.time())), dbus_interface=MENU)
            print(json.dumps({"clicked": e}))
            return
    sys.exit(f"no menu item {label!r} in {[e['label'] for e in entries]}")


def x_windows(title):
    """(display, [(window, name)]) of the X windows whose title contains `title`."""
    from Xlib import display

    d = display.Display()
    net_wm_name = d.intern_atom("_NET_WM_NAME")
    utf8 = d.intern_atom("UTF8_STRING")

    def name(w):
        prop = w.get_full_property(net_wm_name, utf8)
        if prop is not None:
            value = prop.value
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        return w.get_wm_name() or ""

    found = []
    stack = [d.screen().root]
    while stack:
        w = stack.pop()
        try:
            n = name(w)
            if n and title in n:
                found.append((w, n))
            stack.extend(w.query_tree().children)
        except Exception:  # windows come and go while we walk
            continue
    return d, found


def mapped(title):
    from Xlib import X

    _, found = x_windows(title)
    viewable = [n for w, n in found if w.get_attributes().map_state == X.IsViewable]
    print(json.dumps({"windows": len(found), "viewable": len(viewable)}))


def close(title):
    from Xlib import X, protocol

    d, found = x_windows(title)
    wm_protocols = d.intern_atom("WM_PROTOCOLS")
    wm_delete = d.intern_atom("WM_DELETE_WINDOW")
    for w, name in found:
        try:
            # The window on screen, as a window manager would close it (not a hidden helper).
            if w.get_attributes().map_state != X.IsViewable:
                continue
            if wm_delete not in (w.get_wm_protocols() or []):
                continue
            event = protocol.event.ClientMessage(
                window=w, client_type=wm_protocols, data=(32, [wm_delete, X.CurrentTime, 0, 0, 0]))
            w.send_event(event, event_mask=X.NoEventMask)
            d.flush()
        except Exception:  # gone meanwhile
            continue
        print(json.dumps({"closed": name, "window": w.id}))
        return
    sys.exit(f"no window titled like {title!r}")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "serve" and len(sys.argv) == 3:
        serve(sys.argv[2])
    elif cmd == "tray":
        tray()
    elif cmd == "click" and len(sys.argv) == 3:
        click(sys.argv[2])
    elif cmd == "mapped" and len(sys.argv) == 3:
        mapped(sys.argv[2])
    elif cmd == "close" and len(sys.argv) == 3:
        close(sys.argv[2])
    else:
        sys.exit(__doc__)
