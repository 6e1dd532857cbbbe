/*
 * console.js - the h5gate web console: shared helpers (md5, REST calls with the session) and the
 * logic of the three pages (login.html, index.html with its PTZ pads, addcamera.html). Plain ES2017,
 * no dependencies; the live tiles use h5splayer.js (and hls.js through it).
 */

var H5GATE_SESSION_KEY = 'h5gate_session';
var H5GATE_USER_KEY = 'h5gate_user';
var H5GATE_KEEPALIVE_MS = 60000;

/* ---------------------------------------------------------------- md5 (RFC 1321) of a UTF-8 string */

function h5gateMd5(text) {
    var bytes = new TextEncoder().encode(String(text));
    var n = bytes.length;
    var words = new Array((((n + 8) >>> 6) + 1) * 16).fill(0);
    for (var i = 0; i < n; i++) {
        words[i >> 2] |= bytes[i] << ((i % 4) * 8);
    }
    words[n >> 2] |= 0x80 << ((n % 4) * 8);
    words[words.length - 2] = (n * 8) >>> 0;
    words[words.length - 1] = Math.floor(n / 0x20000000) >>> 0;

    var S = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
    var K = [];
    for (var k = 0; k < 64; k++) {
        K[k] = Math.floor(Math.abs(Math.sin(k + 1)) * 0x100000000) | 0;
    }
    var a0 = 0x67452301, b0 = 0xefcdab89 | 0, c0 = 0x98badcfe | 0, d0 = 0x10325476;

    for (var off = 0; off < words.length; off += 16) {
        var a = a0, b = b0, c = c0, d = d0;
        for (var j = 0; j < 64; j++) {
            var f, g, round = j >> 4;
            if (round === 0) {
                f = (b & c) | (~b & d);
                g = j;
            } else if (round === 1) {
                f = (d & b) | (~d & c);
                g = (5 * j + 1) % 16;
            } else if (round === 2) {
                f = b ^ c ^ d;
                g = (3 * j + 5) % 16;
            } else {
                f = c ^ (b | ~d);
                g = (7 * j) % 16;
            }
            var s = S[round * 4 + (j % 4)];
            var sum = (a + f + K[j] + words[off + g]) | 0;
            a = d;
            d = c;
            c = b;
            b = (b + ((sum << s) | (sum >>> (32 - s)))) | 0;
        }
        a0 = (a0 + a) | 0;
        b0 = (b0 + b) | 0;
        c0 = (c0 + c) | 0;
        d0 = (d0 + d) | 0;
    }
    var hex = '';
    [a0, b0, c0, d0].forEach(function (word) {
        for (var b = 0; b < 4; b++) {
            hex += ((word >>> (b * 8)) & 0xff).toString(16).padStart(2, '0');
        }
    });
    return hex;
}

/* ---------------------------------------------------------------- session and REST */

/*
 * The session lives in localStorage, so a second tab and a reload reuse it (sessionStorage is per tab).
 * The server decides whether it is still good: any call answering 401 sends the page to the login.
 * A session left in sessionStorage by an older console is taken over once.
 */
function h5gateSession() {
    var s = localStorage.getItem(H5GATE_SESSION_KEY);
    if (!s) {
        s = sessionStorage.getItem(H5GATE_SESSION_KEY) || '';
        if (s) {
            localStorage.setItem(H5GATE_SESSION_KEY, s);
            localStorage.setItem(H5GATE_USER_KEY, sessionStorage.getItem(H5GATE_USER_KEY) || '');
        }
    }
    return s;
}

function h5gateUser() {
    return localStorage.getItem(H5GATE_USER_KEY) || sessionStorage.getItem(H5GATE_USER_KEY) || '';
}

function h5gateSetSession(session, user) {
    localStorage.setItem(H5GATE_SESSION_KEY, session);
    localStorage.setItem(H5GATE_USER_KEY, user);
}

function h5gateClearSession() {
    [localStorage, sessionStorage].forEach(function (store) {
        store.removeItem(H5GATE_SESSION_KEY);
        store.removeItem(H5GATE_USER_KEY);
    });
}

/* The console's own prefix ('' at the root, '/console' when a web root owns `/`): from the page. */
function h5gateBase() {
    return document.documentElement.getAttribute('data-base') || '';
}

function h5gateGoLogin() {
    h5gateClearSession();
    var login = h5gateBase() + '/login';
    if (window.location.pathname !== login) {
        var back = window.location.pathname + window.location.search;
        window.location.href = login + '?next=' + encodeURIComponent(back);
    }
}

/*
 * GET /api/v1/<name>?<params>&session=<s>; resolves with the JSON answer whatever the HTTP status
 * (errors carry {bStatus:false, strCode}). The session goes in the query and the Authorization header,
 * never only in the cookie, so calls that change state pass the server's CSRF check. A 401 on anything
 * but Login means the session is gone: back to the login page, and the promise rejects.
 */
function h5gateApi(name, params) {
    var query = new URLSearchParams();
    Object.keys(params || {}).forEach(function (key) {
        var value = params[key];
        if (value !== undefined && value !== null) {
            query.set(key, String(value));
        }
    });
    var headers = {};
    var session = h5gateSession();
    if (name !== 'Login' && session) {
        query.set('session', session);
        headers.Authorization = 'token ' + session;
    }
    return fetch('/api/v1/' + name + '?' + query.toString(), { headers: headers, cache: 'no-store' })
        .then(function (resp) {
            if (resp.status === 401 && name !== 'Login') {
                h5gateGoLogin();
                throw new Error('not logged in');
            }
            return resp.json().catch(function () {
                return { bStatus: false, strCode: 'HTTP ' + resp.status + ' ' + resp.statusText };
            });
        });
}

/*
 * What every page behind the login does first: no session -> login page; else show the user in the
 * header, wire "Log out" (with `beforeLogout` to stop players) and keep the session alive.
 * Returns false when the page should not go on.
 */
function h5gatePageStart(beforeLogout) {
    if (!h5gateSession()) {
        h5gateGoLogin();
        return false;
    }
    var me = document.getElementById('whoami');
    if (me) {
        me.textContent = h5gateUser();
    }
    var logout = document.getElementById('logout');
    if (logout) {
        logout.addEventListener('click', function () {
            if (beforeLogout) {
                beforeLogout();
            }
            var done = function () {
                h5gateClearSession();
                window.location.href = h5gateBase() + '/login';
            };
            h5gateApi('Logout', {}).then(done, done);
        });
    }
    setInterval(function () {
        h5gateApi('Keepalive', {}).catch(function () { /* 401 already handled */ });
    }, H5GATE_KEEPALIVE_MS);
    return true;
}

function h5gateEl(tag, attrs, children) {
    var el = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
        if (key === 'text') {
            el.textContent = attrs[key];
        } else if (key.slice(0, 2) === 'on') {
            el.addEventListener(key.slice(2), attrs[key]);
        } else {
            el.setAttribute(key, attrs[key]);
        }
    });
    (children || []).forEach(function (child) {
        el.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
    });
    return el;
}

/* ---------------------------------------------------------------- login page */

/* Where to go after signing in: the page that sent us here (same origin, console paths only). */
function h5gateNextPage() {
    var next = new URLSearchParams(window.location.search).get('next') || '';
    var base = h5gateBase();
    if (next.charAt(0) === '/' && next.charAt(1) !== '/' && next.indexOf(base + '/') === 0 &&
        next.indexOf(base + '/login') !== 0) {
        return next;
    }
    return base + '/';
}

function h5gateLoginPage() {
    var form = document.getElementById('login-form');
    var message = document.getElementById('login-message');
    var button = form.querySelector('button[type=submit]');
    /* A tab opened on the login page while signed in elsewhere: the stored session may still be good. */
    if (h5gateSession()) {
        h5gateApi('Keepalive', {}).then(function (res) {
            if (res.bStatus) {
                window.location.replace(h5gateNextPage());
            }
        }).catch(function () { /* not signed in after all: stay here */ });
    }
    form.addEventListener('submit', function (ev) {
        ev.preventDefault();
        var user = form.elements.user.value.trim();
        var password = form.elements.password.value;
        message.textContent = '';
        button.disabled = true;
        h5gateApi('Login', { user: user, password: h5gateMd5(password) })
            .then(function (res) {
                if (res.bStatus && res.strSession) {
                    h5gateSetSession(res.strSession, user);
                    window.location.href = h5gateNextPage();
                    return;
                }
                var text = res.strCode || 'login failed';
                if (typeof res.tLockTimeResidue === 'number' && res.tLockTimeResidue > 0) {
                    text += ' (locked for another ' + res.tLockTimeResidue + ' s)';
                }
                message.textContent = text;
            })
            .catch(function (err) {
                message.textContent = 'cannot reach the server: ' + err.message;
            })
            .then(function () {
                button.disabled = false;
            });
    });
    form.elements.user.focus();
}

/* ---------------------------------------------------------------- live console (index page) */

var H5GATE_REFRESH_MS = 10000;
var H5GATE_STATS_MS = 1000;
var H5GATE_LAYOUTS = [1, 4, 9, 16];

/* Small inline icons (no icon font: they must render the same everywhere, headless browsers included). */
var H5GATE_ICONS = {
    snap: '<path d="M4 7h3l2-2h6l2 2h3v12H4z"/><circle cx="12" cy="13" r="3.5"/>',
    rec: '<circle cx="12" cy="12" r="6" class="fill"/>',
    sound: '<path d="M4 9h4l5-4v14l-5-4H4z" class="fill"/><path d="M16 8.5a5 5 0 0 1 0 7M18.5 6a8.5 8.5 0 0 1 0 12"/>',
    muted: '<path d="M4 9h4l5-4v14l-5-4H4z" class="fill"/><path d="M16 9l6 6M22 9l-6 6"/>',
    full: '<path d="M4 9V4h5M15 4h5v5M20 15v5h-5M9 20H4v-5"/>',
    edit: '<path d="M4 20h4L19 9l-4-4L4 16z"/>',
    del: '<path d="M5 7h14M10 7V4h4v3M7 7l1 13h8l1-13"/>',
    grip: '<circle cx="9" cy="6" r="1.3" class="fill"/><circle cx="15" cy="6" r="1.3" class="fill"/>' +
        '<circle cx="9" cy="12" r="1.3" class="fill"/><circle cx="15" cy="12" r="1.3" class="fill"/>' +
        '<circle cx="9" cy="18" r="1.3" class="fill"/><circle cx="15" cy="18" r="1.3" class="fill"/>'
};

function h5gateIcon(name) {
    return '<svg class="icon" viewBox="0 0 24 24" aria-hidden="true">' + H5GATE_ICONS[name] + '</svg>';
}

function h5gateIconButton(cls, icon, title, onclick) {
    var button = h5gateEl('button', { type: 'button', class: 'icon-btn ' + cls, title: title, 'aria-label': title,
        onclick: onclick });
    button.innerHTML = h5gateIcon(icon);
    return button;
}

function H5gateTile(source) {
    this.token = source.strToken;
    this.player = null;
    this.source = source;
    this.manual = false;     /* a ManualRecordStart recording runs */
    this.mode = localStorage.getItem('h5gate_mode_' + this.token) || H5sPlayerKind({});
    this._build(source);
    this.update(source);
}

H5gateTile.prototype._build = function (source) {
    var self = this;
    this.dot = h5gateEl('span', { class: 'dot', title: 'offline' });
    this.name = h5gateEl('span', { class: 'tile-name' });
    this.tokenLabel = h5gateEl('span', { class: 'tile-token', text: source.strToken });
    this.grip = h5gateEl('span', { class: 'grip', title: 'drag to move this tile' });
    this.grip.innerHTML = h5gateIcon('grip');
    this.video = h5gateEl('video', { muted: '', playsinline: '', autoplay: '' });
    this.video.muted = true;
    this.video.addEventListener('dblclick', function () { self.toggleFullscreen(); });
    this.error = h5gateEl('div', { class: 'tile-error', hidden: '' });
    this.video.addEventListener('h5serror', function (ev) {
        self.error.textContent = ev.detail.message;
        self.error.hidden = false;
    });
    this.video.addEventListener('playing', function () {
        self.error.hidden = true;
    });
    this.recBadge = h5gateEl('span', { class: 'badge rec-badge', text: 'REC', hidden: '' });
    this.muteBadge = h5gateEl('span', { class: 'badge mute-badge', title: 'sound is off' });
    this.info = h5gateEl('span', { class: 'tile-info' });
    this.wsButton = h5gateEl('button', { type: 'button', class: 'seg', text: 'WS',
        title: 'fMP4 over WebSocket (low latency)', onclick: function () { self.setMode('ws'); } });
    this.rtcButton = h5gateEl('button', { type: 'button', class: 'seg', text: 'RTC',
        title: 'WebRTC (H.264 passed through)', onclick: function () { self.setMode('rtc'); } });
    this.hlsButton = h5gateEl('button', { type: 'button', class: 'seg', text: 'HLS',
        title: 'HLS (hls.js or native)', onclick: function () { self.setMode('hls'); } });
    this.snapButton = h5gateIconButton('act-snap', 'snap', 'take a snapshot', function () { self.snapshot(); });
    this.recButton = h5gateIconButton('act-rec', 'rec', 'start recording', function () { self.toggleRecord(); });
    this.audioButton = h5gateIconButton('act-audio', 'muted', 'sound is off: turn it on',
        function () { self.setMuted(!self.video.muted); });
    this.fullButton = h5gateIconButton('act-full', 'full', 'full screen', function () { self.toggleFullscreen(); });
    var edit = h5gateEl('a', { class: 'icon-btn act-edit', title: 'edit this source', 'aria-label': 'edit this source',
        href: h5gateBase() + '/addcamera?edit=' + encodeURIComponent(this.token) });
    edit.innerHTML = h5gateIcon('edit');
    var del = h5gateIconButton('danger act-del', 'del', 'delete this source', function () { self.remove(); });
    var foot = [h5gateEl('span', { class: 'segmented' }, [this.wsButton, this.rtcButton, this.hlsButton]),
        this.info];
    this.ptz = null;
    if (source.nType === 'H5_ONVIF') {
        this.ptz = new H5gatePtz(this.token);
        foot.push(this.ptz.toggle);
    }
    this.box = h5gateEl('div', { class: 'tile-video' }, [this.video, this.error, this.recBadge, this.muteBadge]);
    this.head = h5gateEl('header', { class: 'tile-head' }, [this.grip, this.dot, this.name, this.tokenLabel,
        h5gateEl('span', { class: 'tile-actions' }, [this.snapButton, this.recButton, this.audioButton,
            this.fullButton, edit, del])]);
    this.el = h5gateEl('article', { class: 'tile', 'data-token': source.strToken }, [
        this.head, this.box, h5gateEl('footer', { class: 'tile-foot' }, foot)
    ]);
    if (this.ptz) {
        this.el.appendChild(this.ptz.el);
        this.ptz.setOpen(this.ptz.open);
    }
    this.setMuted(true);
};

H5gateTile.prototype.update = function (source) {
    this.source = source;
    this.name.textContent = source.strName || source.strToken;
    this.dot.classList.toggle('online', !!source.bOnline);
    this.dot.title = source.bOnline ? 'online' : 'offline';
    var silent = source.bEnableAudio === false || (!!source.bOnline && !source.strAudioCodec);
    this.audioButton.disabled = silent;
    if (silent) {
        this.audioButton.title = 'this source has no audio';
        this.setMuted(true);
    } else {
        this.setMuted(this.video.muted);
    }
};

/* Sound is off until asked for; the button and the badge on the picture always say which it is. */
H5gateTile.prototype.setMuted = function (muted) {
    this.video.muted = muted;
    this.el.classList.toggle('muted', muted);
    this.audioButton.innerHTML = h5gateIcon(muted ? 'muted' : 'sound');
    this.audioButton.setAttribute('aria-pressed', muted ? 'false' : 'true');
    if (!this.audioButton.disabled) {
        this.audioButton.title = muted ? 'sound is off: turn it on' : 'sound is on: turn it off';
    }
    this.audioButton.setAttribute('aria-label', this.audioButton.title);
    this.muteBadge.innerHTML = muted ? h5gateIcon('muted') : '';
    this.muteBadge.hidden = !muted;
    if (!muted && this.video.paused) {
        this.video.play().catch(function () { /* the click was the gesture; nothing else to do */ });
    }
};

H5gateTile.prototype.toggleFullscreen = function () {
    if (document.fullscreenElement === this.box) {
        document.exitFullscreen();
    } else if (this.box.requestFullscreen) {
        this.box.requestFullscreen().catch(function (err) { h5gateNotify('full screen refused: ' + err.message, true); });
    } else if (this.video.webkitEnterFullscreen) {
        this.video.webkitEnterFullscreen();  /* iPhone Safari: only a video element goes full screen */
    }
};

H5gateTile.prototype.snapshot = function () {
    var self = this;
    this.snapButton.disabled = true;
    h5gateApi('Snapshot', { token: this.token }).then(function (res) {
        h5gateNotify(res.bStatus ? 'Snapshot of ' + self.token + ' saved' : (res.strCode || 'snapshot failed'),
            !res.bStatus);
        if (res.bStatus) {
            self.box.classList.remove('flash');
            void self.box.offsetWidth;  /* restart the animation */
            self.box.classList.add('flash');
        }
    }).catch(function (err) {
        h5gateNotify(err.message, true);
    }).then(function () {
        self.snapButton.disabled = false;
    });
};

H5gateTile.prototype.toggleRecord = function () {
    var self = this;
    var call = this.manual ? 'ManualRecordStop' : 'ManualRecordStart';
    this.recButton.disabled = true;
    h5gateApi(call, { token: this.token }).then(function (res) {
        h5gateNotify(res.strCode || (res.bStatus ? 'done' : 'failed'), !res.bStatus);
        return H5gateConsole.loadRecordStatus();
    }).catch(function (err) {
        h5gateNotify(err.message, true);
    }).then(function () {
        self.recButton.disabled = false;
    });
};

/* From GetRecordStatus: the REC badge for any recording, the button for the manual one. */
H5gateTile.prototype.setRecordStatus = function (status) {
    var list = (status && status.recording) || [];
    this.manual = list.some(function (r) { return r.strOrigin === 'ManualRecordStart'; });
    this.recBadge.hidden = !(status && status.bRecording);
    this.recBadge.title = status ? status.strStatus : '';
    this.recButton.classList.toggle('on', this.manual);
    this.recButton.setAttribute('aria-pressed', this.manual ? 'true' : 'false');
    this.recButton.title = this.manual ? 'stop recording' : 'start recording';
    this.recButton.setAttribute('aria-label', this.recButton.title);
};

H5gateTile.prototype.conf = function () {
    return {
        videodom: this.video,
        protocol: window.location.protocol,
        host: window.location.host,
        rootpath: '/',
        token: this.token,
        hlsver: 'v2', /* fMP4 LL-HLS: under a second behind the camera, where v1 (TS) is several seconds */
        session: h5gateSession(),
        streamprofile: 'main',
        consolelog: 'false'
    };
};

H5gateTile.prototype.play = function () {
    this.stop();
    this.error.hidden = true;
    var conf = this.conf();
    var Player = H5sPlayerKinds[this.mode] || H5sPlayerKinds[H5sPlayerKind(conf)];
    this.player = new Player(conf);
    this.player.connect();
    this.wsButton.classList.toggle('active', this.mode === 'ws');
    this.rtcButton.classList.toggle('active', this.mode === 'rtc');
    this.hlsButton.classList.toggle('active', this.mode === 'hls');
};

H5gateTile.prototype.stop = function () {
    if (this.player) {
        this.player.disconnect();
        this.player = null;
    }
};

H5gateTile.prototype.setMode = function (mode) {
    if (mode === this.mode && this.player) {
        return;
    }
    this.mode = mode;
    localStorage.setItem('h5gate_mode_' + this.token, mode);
    this.play();
};

H5gateTile.prototype.showStats = function () {
    if (!this.player) {
        return;
    }
    var s = this.player.stats();
    var text = this.mode.toUpperCase() + ' · ' + s.state;
    if (s.state === 'playing') {
        text += ' · ' + s.latency.toFixed(2) + ' s behind';
    }
    if (s.reconnects) {
        text += ' · ' + s.reconnects + (s.reconnects === 1 ? ' reconnect' : ' reconnects');
    }
    this.info.textContent = text;
};

H5gateTile.prototype.remove = function () {
    if (!window.confirm('Delete source "' + this.token + '"?')) {
        return;
    }
    h5gateApi('DelSrc', { token: this.token }).then(function (res) {
        if (!res.bStatus) {
            h5gateNotify(res.strCode || 'delete failed', true);
            return;
        }
        h5gateNotify(res.strCode || 'deleted', false);
        H5gateConsole.refresh();
    }).catch(function (err) {
        h5gateNotify(err.message, true);
    });
};

H5gateTile.prototype.destroy = function () {
    this.stop();
    if (this.ptz) {
        this.ptz.destroy();
    }
    this.el.remove();
};

/* ---------------------------------------------------------------- PTZ pad and presets (ONVIF tiles) */

/*
 * The pad under an ONVIF tile. Direction, zoom and focus buttons are press-and-hold: pressing sends
 * Ptz?action=<move>&speed=<slider>, releasing (pointer up/cancel, key up, window blur) sends
 * action=stop. Iris buttons step once per click. Commands go out one after the other (a stop never
 * overtakes the move it ends). Errors show the server's strCode in the panel.
 */
var H5GATE_PTZ_PAD = [
    ['upleft', '\u2196', 'up left'], ['up', '\u2191', 'up'], ['upright', '\u2197', 'up right'],
    ['left', '\u2190', 'left'], ['stop', '\u25A0', 'stop'], ['right', '\u2192', 'right'],
    ['downleft', '\u2199', 'down left'], ['down', '\u2193', 'down'], ['downright', '\u2198', 'down right']
];
var H5GATE_PTZ_PAIRS = [
    // label, [action, text, title, hold] x 2
    ['Zoom', ['zoomout', '\u2212', 'zoom out (wide)', true], ['zoomin', '+', 'zoom in (tele)', true]],
    ['Focus', ['focusout', '\u2212', 'focus near', true], ['focusin', '+', 'focus far', true]],
    ['Iris', ['irisout', '\u2212', 'close the iris one step', false], ['irisin', '+', 'open the iris one step', false]]
];

function H5gatePtz(token) {
    var self = this;
    this.token = token;
    this.held = null;
    this.chain = Promise.resolve();
    this.loaded = false;
    this.open = localStorage.getItem('h5gate_ptz_open_' + token) !== '0';
    this._onBlur = function () { self.release(self.held); };

    this.toggle = h5gateEl('button', { type: 'button', class: 'small ptz-toggle', text: 'PTZ',
        title: 'show or hide the PTZ pad and presets', 'aria-expanded': 'false',
        onclick: function () { self.setOpen(!self.open); } });

    var pad = h5gateEl('div', { class: 'ptz-pad', role: 'group', 'aria-label': 'pan and tilt' });
    H5GATE_PTZ_PAD.forEach(function (item) {
        var button = h5gateEl('button', { type: 'button', class: 'ptz-btn', 'data-action': item[0],
            title: item[2], 'aria-label': item[2], text: item[1] });
        if (item[0] === 'stop') {
            button.classList.add('ptz-stop');
            button.addEventListener('click', function () { self.send('stop'); });
        } else {
            self._hold(button, item[0]);
        }
        pad.appendChild(button);
    });

    var side = h5gateEl('div', { class: 'ptz-side' });
    H5GATE_PTZ_PAIRS.forEach(function (pair) {
        var row = h5gateEl('div', { class: 'ptz-pair' }, [h5gateEl('span', { class: 'ptz-label', text: pair[0] })]);
        [pair[1], pair[2]].forEach(function (item) {
            var button = h5gateEl('button', { type: 'button', class: 'ptz-btn', 'data-action': item[0],
                title: item[2], 'aria-label': item[2], text: item[1] });
            if (item[3]) {
                self._hold(button, item[0]);
            } else {
                button.addEventListener('click', function () { self.send(item[0]); });
            }
            row.appendChild(button);
        });
        side.appendChild(row);
    });
    var stored = parseFloat(localStorage.getItem('h5gate_ptz_speed_' + token));
    this.speed = h5gateEl('input', { type: 'range', class: 'ptz-speed-input', min: '0.1', max: '1',
        step: '0.1', 'aria-label': 'PTZ speed' });
    this.speed.value = String(stored >= 0.1 && stored <= 1 ? stored : 0.5);
    var speedText = h5gateEl('output', { class: 'ptz-speed-value', text: Number(this.speed.value).toFixed(1) });
    this.speed.addEventListener('input', function () {
        speedText.textContent = Number(self.speed.value).toFixed(1);
        localStorage.setItem('h5gate_ptz_speed_' + token, self.speed.value);
    });
    side.appendChild(h5gateEl('label', { class: 'ptz-speed', title: 'speed of moves, zoom and focus' },
        [h5gateEl('span', { class: 'ptz-label', text: 'Speed' }), this.speed, speedText]));

    this.list = h5gateEl('ul', { class: 'preset-list' });
    this.presetName = h5gateEl('input', { name: 'presetname', placeholder: 'Name of this position',
        maxlength: '64', autocomplete: 'off', 'aria-label': 'preset name' });
    var addForm = h5gateEl('form', { class: 'preset-add', autocomplete: 'off' }, [
        this.presetName,
        h5gateEl('button', { type: 'submit', class: 'small', text: 'Save preset',
            title: 'store the current position as a preset' })
    ]);
    addForm.addEventListener('submit', function (ev) {
        ev.preventDefault();
        self.savePreset();
    });
    var presets = h5gateEl('div', { class: 'ptz-presets' }, [
        h5gateEl('div', { class: 'ptz-presets-head' }, [
            h5gateEl('span', { class: 'ptz-label', text: 'Presets' }),
            h5gateEl('button', { type: 'button', class: 'small link preset-reload', text: 'Reload',
                title: 'read the presets from the camera again', onclick: function () { self.loadPresets(); } })
        ]),
        this.list,
        addForm
    ]);
    this.message = h5gateEl('p', { class: 'ptz-message form-error', role: 'alert' });
    this.el = h5gateEl('section', { class: 'ptz', 'aria-label': 'PTZ' }, [
        h5gateEl('div', { class: 'ptz-controls' }, [pad, side]),
        presets,
        this.message
    ]);
}

H5gatePtz.prototype.setOpen = function (open) {
    this.open = open;
    this.el.hidden = !open;
    this.toggle.classList.toggle('active', open);
    this.toggle.setAttribute('aria-expanded', open ? 'true' : 'false');
    localStorage.setItem('h5gate_ptz_open_' + this.token, open ? '1' : '0');
    if (open && !this.loaded) {
        this.loaded = true;
        this.loadPresets();
    }
    if (!open) {
        this.release(this.held);
    }
};

H5gatePtz.prototype._hold = function (button, action) {
    var self = this;
    button.classList.add('hold');
    button.addEventListener('pointerdown', function (ev) {
        if (ev.button !== 0) {
            return;
        }
        ev.preventDefault();
        if (button.setPointerCapture) {
            try {
                button.setPointerCapture(ev.pointerId);
            } catch (e) { /* the pointer is already gone */ }
        }
        self.press(button, action);
    });
    ['pointerup', 'pointercancel', 'lostpointercapture'].forEach(function (name) {
        button.addEventListener(name, function () { self.release(button); });
    });
    button.addEventListener('keydown', function (ev) {
        if ((ev.key === ' ' || ev.key === 'Enter') && !ev.repeat) {
            ev.preventDefault();
            self.press(button, action);
        }
    });
    button.addEventListener('keyup', function (ev) {
        if (ev.key === ' ' || ev.key === 'Enter') {
            self.release(button);
        }
    });
    button.addEventListener('blur', function () { self.release(button); });
    button.addEventListener('contextmenu', function (ev) { ev.preventDefault(); });
};

H5gatePtz.prototype.press = function (button, action) {
    if (this.held) {
        this.release(this.held);
    }
    this.held = button;
    button.classList.add('pressed');
    window.addEventListener('blur', this._onBlur);
    this.send(action, { speed: this.speed.value });
};

H5gatePtz.prototype.release = function (button) {
    if (!button || this.held !== button) {
        return;
    }
    this.held = null;
    button.classList.remove('pressed');
    window.removeEventListener('blur', this._onBlur);
    this.send('stop');
};

/* Queue one Ptz call behind the previous ones; resolves with the answer (or null on a network error). */
H5gatePtz.prototype.send = function (action, extra) {
    var self = this;
    var params = Object.assign({ token: this.token, action: action }, extra || {});
    this.chain = this.chain.then(function () {
        return h5gateApi('Ptz', params);
    }).then(function (res) {
        self.report(res);
        return res;
    }, function (err) {
        self.showError(err.message);
        return null;
    });
    return this.chain;
};

H5gatePtz.prototype.report = function (res) {
    if (res && res.bStatus) {
        this.message.textContent = '';
    } else {
        this.showError((res && res.strCode) || 'the request failed');
    }
};

H5gatePtz.prototype.showError = function (text) {
    this.message.textContent = text;
};

H5gatePtz.prototype.loadPresets = function () {
    var self = this;
    return h5gateApi('GetPresets', { token: this.token }).then(function (res) {
        if (!res.bStatus) {
            self.showError(res.strCode || 'cannot read the presets');
            self.renderPresets(null);
            return;
        }
        self.renderPresets(res.preset || []);
    }).catch(function (err) {
        self.showError(err.message);
    });
};

H5gatePtz.prototype.renderPresets = function (presets) {
    var self = this;
    this.list.textContent = '';
    if (presets === null) {
        this.list.appendChild(h5gateEl('li', { class: 'muted preset-empty', text: 'Presets unavailable' }));
        return;
    }
    if (!presets.length) {
        this.list.appendChild(h5gateEl('li', { class: 'muted preset-empty', text: 'No presets yet' }));
        return;
    }
    presets.forEach(function (preset) {
        var label = preset.strName || preset.strToken;
        self.list.appendChild(h5gateEl('li', { class: 'preset', 'data-preset': preset.strToken }, [
            h5gateEl('button', { type: 'button', class: 'preset-go', title: 'go to "' + label + '"',
                onclick: function () { self.send('preset', { preset: preset.strToken }); } }, [
                h5gateEl('span', { class: 'preset-name', text: label }),
                h5gateEl('span', { class: 'preset-token', text: preset.strToken })
            ]),
            h5gateEl('button', { type: 'button', class: 'preset-del danger', text: '\u00D7',
                title: 'delete preset "' + label + '"', 'aria-label': 'delete preset ' + label,
                onclick: function () { self.deletePreset(preset.strToken, label); } })
        ]));
    });
};

H5gatePtz.prototype.savePreset = function () {
    var self = this;
    var name = this.presetName.value.trim();
    var params = { token: this.token };
    if (name) {
        params.presetname = name;
    }
    return h5gateApi('SetPreset', params).then(function (res) {
        if (!res.bStatus) {
            self.showError(res.strCode || 'cannot save the preset');
            return;
        }
        self.message.textContent = '';
        self.presetName.value = '';
        return self.loadPresets();
    }).catch(function (err) {
        self.showError(err.message);
    });
};

H5gatePtz.prototype.deletePreset = function (presetToken, label) {
    var self = this;
    if (!window.confirm('Delete preset "' + label + '"?')) {
        return Promise.resolve();
    }
    return h5gateApi('DelPreset', { token: this.token, presettoken: presetToken }).then(function (res) {
        if (!res.bStatus) {
            self.showError(res.strCode || 'cannot delete the preset');
        } else {
            self.message.textContent = '';
        }
        return self.loadPresets();
    }).catch(function (err) {
        self.showError(err.message);
    });
};

H5gatePtz.prototype.destroy = function () {
    this.release(this.held);
};

function h5gateNotify(text, isError) {
    var box = document.getElementById('notice');
    if (!box) {
        return;
    }
    box.textContent = text;
    box.className = 'notice ' + (isError ? 'error' : 'ok');
    box.hidden = false;
    clearTimeout(h5gateNotify._timer);
    h5gateNotify._timer = setTimeout(function () {
        box.hidden = true;
    }, isError ? 10000 : 4000);
}

/*
 * The live grid: sources in the user's order (dragged tiles are swapped; kept in localStorage), shown
 * `layout` at a time (1, 4, 9 or 16) with pages for the rest. Only the tiles on the page play.
 */
var H5gateConsole = {
    tiles: {},
    layout: 4,
    page: 0,
    order: [],
    drag: null,

    loadPrefs: function () {
        var layout = parseInt(localStorage.getItem('h5gate_layout'), 10);
        this.layout = H5GATE_LAYOUTS.indexOf(layout) >= 0 ? layout : 4;
        try {
            this.order = JSON.parse(localStorage.getItem('h5gate_order') || '[]');
        } catch (e) {
            this.order = [];
        }
        if (!Array.isArray(this.order)) {
            this.order = [];
        }
    },

    saveOrder: function () {
        localStorage.setItem('h5gate_order', JSON.stringify(this.order));
    },

    setLayout: function (n) {
        if (H5GATE_LAYOUTS.indexOf(n) < 0) {
            return;
        }
        var first = this.page * this.layout;  /* keep the first tile shown on the new page */
        this.layout = n;
        this.page = Math.floor(first / n);
        localStorage.setItem('h5gate_layout', String(n));
        this.render();
    },

    setPage: function (page) {
        this.page = page;
        this.render();
    },

    /* Known tokens in the user's order; new sources go at the end. */
    ordered: function () {
        var self = this;
        var tokens = this.order.filter(function (t) { return self.tiles[t]; });
        Object.keys(this.tiles).forEach(function (t) {
            if (tokens.indexOf(t) < 0) {
                tokens.push(t);
            }
        });
        this.order = tokens;
        return tokens;
    },

    render: function () {
        var self = this;
        var grid = document.getElementById('grid');
        var tokens = this.ordered();
        var pages = Math.max(1, Math.ceil(tokens.length / this.layout));
        this.page = Math.min(Math.max(0, this.page), pages - 1);
        var shown = tokens.slice(this.page * this.layout, (this.page + 1) * this.layout);
        grid.setAttribute('data-layout', String(this.layout));
        tokens.forEach(function (t) {
            var tile = self.tiles[t];
            if (shown.indexOf(t) < 0) {
                tile.stop();
                if (tile.el.parentNode) {
                    tile.el.remove();
                }
            }
        });
        Array.prototype.slice.call(grid.querySelectorAll('.tile-empty')).forEach(function (n) { n.remove(); });
        shown.forEach(function (t) {
            var tile = self.tiles[t];
            grid.appendChild(tile.el);  /* moves it into place; a playing video keeps playing */
            if (!tile.player) {
                tile.play();
            }
        });
        for (var i = shown.length; i < this.layout && tokens.length; i++) {
            grid.appendChild(h5gateEl('div', { class: 'tile-empty', 'aria-hidden': 'true' }));
        }
        Array.prototype.slice.call(document.querySelectorAll('[data-layout-button]')).forEach(function (b) {
            var on = +b.getAttribute('data-layout-button') === self.layout;
            b.classList.toggle('active', on);
            b.setAttribute('aria-pressed', on ? 'true' : 'false');
        });
        var pager = document.getElementById('pager');
        pager.hidden = pages < 2;
        document.getElementById('page-label').textContent = (this.page + 1) + ' / ' + pages;
        document.getElementById('page-prev').disabled = this.page === 0;
        document.getElementById('page-next').disabled = this.page >= pages - 1;
        document.getElementById('empty').hidden = tokens.length > 0;
    },

    /* Dragging a tile by its head onto another swaps the two. Pointer events: mouse, pen and touch alike. */
    startDrag: function (tile, ev) {
        if (ev.button !== 0 || ev.target.closest('button, a, input, select')) {
            return;
        }
        ev.preventDefault();
        this.drag = { tile: tile, target: null };
        tile.el.classList.add('dragging');
        tile.head.setPointerCapture(ev.pointerId);
    },

    moveDrag: function (ev) {
        if (!this.drag) {
            return;
        }
        var under = document.elementFromPoint(ev.clientX, ev.clientY);
        var el = under && under.closest('.tile');
        var target = el && el !== this.drag.tile.el ? this.tiles[el.getAttribute('data-token')] : null;
        if (this.drag.target && this.drag.target !== target) {
            this.drag.target.el.classList.remove('drop-target');
        }
        this.drag.target = target || null;
        if (target) {
            target.el.classList.add('drop-target');
        }
    },

    endDrag: function () {
        if (!this.drag) {
            return;
        }
        var drag = this.drag;
        this.drag = null;
        drag.tile.el.classList.remove('dragging');
        if (!drag.target) {
            return;
        }
        drag.target.el.classList.remove('drop-target');
        var order = this.ordered();
        var a = order.indexOf(drag.tile.token);
        var b = order.indexOf(drag.target.token);
        order[a] = drag.target.token;
        order[b] = drag.tile.token;
        this.saveOrder();
        this.render();
    },

    adopt: function (tile) {
        var self = this;
        tile.head.addEventListener('pointerdown', function (ev) { self.startDrag(tile, ev); });
        tile.head.addEventListener('pointermove', function (ev) { self.moveDrag(ev); });
        tile.head.addEventListener('pointerup', function () { self.endDrag(); });
        tile.head.addEventListener('pointercancel', function () { self.endDrag(); });
    },

    refresh: function () {
        var self = this;
        return h5gateApi('GetSrc', {}).then(function (res) {
            var sources = res.src || [];
            var seen = {};
            sources.forEach(function (src) {
                seen[src.strToken] = true;
                if (self.tiles[src.strToken]) {
                    self.tiles[src.strToken].update(src);
                } else {
                    self.tiles[src.strToken] = new H5gateTile(src);
                    self.adopt(self.tiles[src.strToken]);
                }
            });
            Object.keys(self.tiles).forEach(function (token) {
                if (!seen[token]) {
                    self.tiles[token].destroy();
                    delete self.tiles[token];
                }
            });
            self.render();
            if (res.bStatus === false && res.strCode) {
                h5gateNotify(res.strCode, true);
            }
            self.loadRecordStatus().catch(function () { /* 401 already handled */ });
        }).catch(function (err) {
            h5gateNotify('cannot list sources: ' + err.message, true);
        });
    },

    loadRecordStatus: function () {
        var self = this;
        return h5gateApi('GetRecordStatus', {}).then(function (res) {
            (res.src || []).forEach(function (status) {
                var tile = self.tiles[status.strToken];
                if (tile) {
                    tile.setRecordStatus(status);
                }
            });
        });
    },

    stopAll: function () {
        var self = this;
        Object.keys(this.tiles).forEach(function (token) {
            self.tiles[token].stop();
        });
    }
};

function h5gateConsolePage() {
    var page = H5gateConsole;
    if (!h5gatePageStart(function () { page.stopAll(); })) {
        return;
    }
    page.loadPrefs();
    Array.prototype.slice.call(document.querySelectorAll('[data-layout-button]')).forEach(function (b) {
        b.addEventListener('click', function () { page.setLayout(+b.getAttribute('data-layout-button')); });
    });
    document.getElementById('page-prev').addEventListener('click', function () { page.setPage(page.page - 1); });
    document.getElementById('page-next').addEventListener('click', function () { page.setPage(page.page + 1); });
    var added = new URLSearchParams(window.location.search).get('added');
    if (added) {
        window.history.replaceState(null, '', window.location.pathname);
    }
    page.refresh().then(function () {
        if (!added) {
            return;
        }
        var tile = page.tiles[added];
        h5gateNotify('Camera "' + (tile ? tile.name.textContent : added) + '" added', false);
        var at = page.ordered().indexOf(added);
        if (at >= 0) {
            page.setPage(Math.floor(at / page.layout));
            tile.el.scrollIntoView({ block: 'nearest' });
        }
    });
    setInterval(function () { page.refresh(); }, H5GATE_REFRESH_MS);
    setInterval(function () {
        Object.keys(page.tiles).forEach(function (token) {
            page.tiles[token].showStats();
        });
    }, H5GATE_STATS_MS);
}

/* ---------------------------------------------------------------- sources page: list, add and edit */

var H5GATE_KIND_OF_TYPE = { H5_STREAM: 'stream', H5_FILE: 'file', H5_ONVIF: 'onvif', H5_RTMP_PUSH: 'push' };

function h5gateKindLabel(src) {
    if (src.nType === 'H5_FILE') {
        return 'File';
    }
    if (src.nType === 'H5_ONVIF') {
        return 'ONVIF';
    }
    if (src.nType === 'H5_RTMP_PUSH') {
        return 'RTMP push';
    }
    var scheme = String(src.strUrl || '').split(':')[0].toUpperCase();
    return scheme || 'Stream';
}

/*
 * One page for every kind of source: the list (with Edit and Delete), and a form per kind. Editing
 * fills the kind's form from GetSrc, locks the token and sends UpdateSrc<Kind>; an empty password
 * keeps the stored one, which GetSrc never shows.
 */
var H5gateSources = {
    sources: [],
    kind: 'stream',
    editing: null,      /* the source being edited, or null when adding */

    el: function (id) {
        return document.getElementById(id);
    },

    load: function () {
        var self = this;
        return h5gateApi('GetSrc', {}).then(function (res) {
            self.sources = res.src || [];
            self.render();
        });
    },

    render: function () {
        var self = this;
        var body = this.el('source-rows');
        body.textContent = '';
        this.sources.forEach(function (src) {
            var address = src.nType === 'H5_ONVIF' ? src.strSrcIpAddress + ':' + src.strSrcPort : src.strUrl;
            body.appendChild(h5gateEl('tr', { 'data-token': src.strToken }, [
                h5gateEl('td', { text: src.strName }),
                h5gateEl('td', { class: 'mono', text: src.strToken }),
                h5gateEl('td', { text: h5gateKindLabel(src) }),
                h5gateEl('td', { class: 'mono url hide-narrow', title: address, text: address }),
                h5gateEl('td', {}, [h5gateEl('span', { class: 'dot' + (src.bOnline ? ' online' : '') }),
                    ' ' + (src.bOnline ? 'online' : 'offline')]),
                h5gateEl('td', { class: 'actions' }, [
                    h5gateEl('button', src.nType === 'H5_RTMP_PUSH' ? { type: 'button', class: 'small edit',
                        text: 'Edit', disabled: '', title: 'an RTMP push source has nothing to edit; for a new ' +
                        'key, delete it and add it again' } : { type: 'button', class: 'small edit', text: 'Edit',
                        onclick: function () { self.edit(src.strToken); } }),
                    h5gateEl('button', { type: 'button', class: 'small danger', text: 'Delete',
                        onclick: function () { self.remove(src.strToken); } })
                ])
            ]));
        });
        if (!this.sources.length) {
            body.appendChild(h5gateEl('tr', {}, [h5gateEl('td', { colspan: '6', class: 'muted',
                text: 'No sources yet: add one below.' })]));
        }
    },

    setKind: function (kind) {
        this.kind = kind;
        Array.prototype.slice.call(document.querySelectorAll('[data-kind]')).forEach(function (b) {
            var on = b.getAttribute('data-kind') === kind;
            b.classList.toggle('active', on);
            b.setAttribute('aria-selected', on ? 'true' : 'false');
        });
        Array.prototype.slice.call(document.querySelectorAll('[data-panel]')).forEach(function (panel) {
            panel.hidden = panel.getAttribute('data-panel') !== kind;
        });
    },

    edit: function (token) {
        var src = this.sources.filter(function (s) { return s.strToken === token; })[0];
        if (!src) {
            h5gateNotify('no such source: ' + token, true);
            return;
        }
        this.editing = src;
        var kind = H5GATE_KIND_OF_TYPE[src.nType] || 'stream';
        this.setKind(kind);
        Array.prototype.slice.call(document.querySelectorAll('[data-kind]')).forEach(function (b) {
            b.disabled = b.getAttribute('data-kind') !== kind;  /* a source keeps its kind */
        });
        this.el('form-title').textContent = 'Edit "' + src.strName + '"';
        var form = kind === 'onvif' ? this.el('onvif-add-form') : this.el(kind + '-form');
        var f = form.elements;
        f.name.value = src.strName;
        f.token.value = src.strToken;
        f.token.readOnly = true;
        f.audio.checked = src.bEnableAudio !== false;
        if (kind === 'stream') {
            f.url.value = src.strUrl;
            f.user.value = src.strUser || '';
            f.password.value = '';
            f.password.placeholder = 'unchanged';
            f.rtsptype.value = src.nRTSPType || 'H5_RTSP_AUTO';
            f.connecttype.value = src.nConnectType === 'H5_ONDEMAND' ? 'H5_ONDEMAND' : 'H5_ALWAYS';
            f.suburl.value = src.strUrlSub || '';
        } else if (kind === 'file') {
            f.url.value = src.strUrl;
            f.connecttype.value = src.nConnectType === 'H5_ONDEMAND' ? 'H5_ONDEMAND' : 'H5_ALWAYS';
        } else {
            var p = this.el('probe-form').elements;
            p.ip.value = src.strSrcIpAddress;
            p.port.value = src.strSrcPort || '80';
            p.onvifaddr.value = src.strOnvifAddr || H5GATE_DEFAULT_ONVIF_ADDR;
            p.user.value = src.strUser || '';
            p.password.value = '';
            p.password.placeholder = 'unchanged';
            H5gateAddCamera.named = true;
            this.el('add-card').hidden = false;
        }
        Array.prototype.slice.call(document.querySelectorAll('.cancel-edit')).forEach(function (b) { b.hidden = false; });
        ['stream-submit', 'file-submit', 'add-camera'].forEach(function (id) {
            document.getElementById(id).textContent = 'Save changes';
        });
        this.el('form-title').scrollIntoView({ block: 'start' });
        (kind === 'onvif' ? this.el('probe-form').elements.ip : f.name).focus();
    },

    /* Back to adding: empty forms, the token editable again. */
    reset: function () {
        this.editing = null;
        ['stream-form', 'file-form', 'onvif-add-form', 'probe-form'].forEach(function (id) {
            var form = document.getElementById(id);
            form.reset();
            if (form.elements.token) {
                form.elements.token.readOnly = false;
            }
            if (form.elements.password) {
                form.elements.password.placeholder = '';
            }
        });
        H5gateAddCamera.named = false;
        H5gateAddCamera.invalidate();
        Array.prototype.slice.call(document.querySelectorAll('[data-kind]')).forEach(function (b) { b.disabled = false; });
        Array.prototype.slice.call(document.querySelectorAll('.cancel-edit')).forEach(function (b) { b.hidden = true; });
        this.el('stream-submit').textContent = 'Add source';
        this.el('file-submit').textContent = 'Add source';
        this.el('add-camera').textContent = 'Add camera';
        this.el('form-title').textContent = 'Add a source';
        if (window.location.search) {
            window.history.replaceState(null, '', window.location.pathname);
        }
    },

    submit: function (kind) {
        var self = this;
        var form = this.el(kind + '-form');
        var f = form.elements;
        var message = this.el(kind + '-message');
        var button = this.el(kind + '-submit');
        var editing = this.editing;
        var params = { token: f.token.value.trim(), name: f.name.value.trim() || f.token.value.trim(),
            url: f.url.value.trim(), connecttype: f.connecttype.value, audio: f.audio.checked ? 'true' : 'false' };
        if (kind === 'stream') {
            params.user = f.user.value;
            if (f.password.value || !editing) {
                params.password = f.password.value;
            }
            params.rtsptype = f.rtsptype.value;
            params.suburl = f.suburl.value.trim();
            params.enablesub = params.suburl ? 'true' : 'false';
        }
        var call = (editing ? 'UpdateSrc' : 'AddSrc') + (kind === 'stream' ? 'RTSP' : 'File');
        message.textContent = '';
        button.disabled = true;
        return h5gateApi(call, params).then(function (res) {
            if (!res.bStatus) {
                message.textContent = res.strCode || 'failed';
                return;
            }
            if (editing) {
                h5gateNotify('Source "' + params.name + '" saved', false);
                self.reset();
                self.load();
                return;
            }
            window.location.href = h5gateBase() + '/?added=' + encodeURIComponent(params.token);
        }).catch(function (err) {
            message.textContent = 'cannot reach the server: ' + err.message;
        }).then(function () {
            button.disabled = false;
        });
    },

    /* RTMP push: the answer carries the publish URL, which the user needs now, so the page stays. */
    addPush: function () {
        var self = this;
        var f = this.el('push-form').elements;
        var message = this.el('push-message');
        var params = { token: f.token.value.trim(), name: f.name.value.trim() || f.token.value.trim(),
            audio: f.audio.checked ? 'true' : 'false' };
        message.textContent = '';
        this.el('push-result').hidden = true;
        return h5gateApi('AddRTMPPush', params).then(function (res) {
            if (!res.bStatus) {
                message.textContent = res.strCode || 'add failed';
                return;
            }
            if (!res.strUrl) {
                message.textContent = 'added, but RTMP push-in is turned off on this server (rtmp_port = 0)';
            }
            self.el('push-url').value = res.strUrl || '';
            self.el('push-live').href = h5gateBase() + '/?added=' + encodeURIComponent(params.token);
            self.el('push-result').hidden = false;
            self.el('push-form').reset();
            self.load();
        }).catch(function (err) {
            message.textContent = 'cannot reach the server: ' + err.message;
        });
    },

    remove: function (token) {
        var self = this;
        if (!window.confirm('Delete source "' + token + '"?')) {
            return;
        }
        h5gateApi('DelSrc', { token: token }).then(function (res) {
            h5gateNotify(res.strCode || (res.bStatus ? 'deleted' : 'delete failed'), !res.bStatus);
            if (self.editing && self.editing.strToken === token) {
                self.reset();
            }
            self.load();
        });
    }
};

/* ---------------------------------------------------------------- add camera page (ONVIF) */

var H5GATE_DEFAULT_ONVIF_ADDR = '/onvif/device_service';

/* A source token from free text: letters, digits, _ . - only, at most 64. */
function h5gateTokenFrom(text) {
    var token = String(text || '').toLowerCase().replace(/[^a-z0-9_.-]+/g, '_').replace(/^_+|_+$/g, '');
    return token.slice(0, 64);
}

function h5gateProfileSize(p) {
    return p.nWidth && p.nHeight ? p.nWidth + ' \u00D7 ' + p.nHeight : '\u2014';
}

function h5gateProfileLabel(p) {
    var parts = [p.strToken];
    var detail = [p.strCodecName, p.nWidth && p.nHeight ? p.nWidth + 'x' + p.nHeight : '',
        p.nFps ? p.nFps + ' fps' : ''].filter(Boolean).join(' ');
    if (detail) {
        parts.push('(' + detail + ')');
    }
    return parts.join(' ');
}

var H5gateAddCamera = {
    probed: null,    // the device parameters the shown profiles came from
    named: false,    // the user typed a name/token: stop suggesting

    el: function (id) {
        return document.getElementById(id);
    },

    search: function () {
        var self = this;
        var button = this.el('search');
        var status = this.el('search-status');
        var seconds = Number(this.el('search-timeout').value) || 3;
        button.disabled = true;
        status.className = 'muted';
        status.textContent = 'Searching for ' + seconds + ' s\u2026';
        return h5gateApi('OnvifSearch', { timeout: seconds }).then(function (res) {
            if (res.bStatus === false) {
                status.className = 'form-error';
                status.textContent = res.strCode || 'search failed';
                self.renderDevices([]);
                return;
            }
            var devices = res.device || [];
            status.className = 'muted';
            status.textContent = devices.length
                ? 'Found ' + devices.length + (devices.length === 1 ? ' device.' : ' devices.') +
                  ' Pick one, or type its address below.'
                : 'No device answered. Type its address below.';
            self.renderDevices(devices);
        }).catch(function (err) {
            status.className = 'form-error';
            status.textContent = 'cannot reach the server: ' + err.message;
        }).then(function () {
            button.disabled = false;
        });
    },

    renderDevices: function (devices) {
        var self = this;
        var body = this.el('device-rows');
        body.textContent = '';
        devices.forEach(function (d) {
            var row = h5gateEl('tr', { 'data-ip': d.strIp, 'data-port': d.strPort }, [
                h5gateEl('td', { text: d.strName || '\u2014' }),
                h5gateEl('td', { text: d.strModel || '\u2014' }),
                h5gateEl('td', { class: 'mono', text: d.strIp + ':' + d.strPort }),
                h5gateEl('td', { class: 'mono', text: d.strOnvifAddr || H5GATE_DEFAULT_ONVIF_ADDR }),
                h5gateEl('td', { class: 'actions' }, [
                    h5gateEl('button', { type: 'button', class: 'small', text: 'Use',
                        onclick: function () { self.useDevice(d, row); } })
                ])
            ]);
            body.appendChild(row);
        });
        this.el('device-table').hidden = devices.length === 0;
    },

    useDevice: function (d, row) {
        var f = this.el('probe-form').elements;
        f.ip.value = d.strIp;
        f.port.value = d.strPort || '80';
        f.onvifaddr.value = d.strOnvifAddr || H5GATE_DEFAULT_ONVIF_ADDR;
        Array.prototype.forEach.call(this.el('device-rows').children, function (tr) {
            tr.classList.toggle('selected', tr === row);
        });
        this.deviceName = d.strName || d.strModel || '';
        this.invalidate();
        (f.user.value ? f.password : f.user).focus();
    },

    /* Connection details changed: the profiles shown no longer belong to them. */
    invalidate: function () {
        this.probed = null;
        this.el('profiles-card').hidden = true;
        this.el('add-card').hidden = !H5gateSources.editing;  /* an edit can be saved without a new probe */
    },

    deviceParams: function () {
        var f = this.el('probe-form').elements;
        return { ip: f.ip.value.trim(), port: f.port.value.trim() || '80',
            onvifaddr: f.onvifaddr.value.trim() || H5GATE_DEFAULT_ONVIF_ADDR,
            user: f.user.value, password: f.password.value };
    },

    probe: function () {
        var self = this;
        var device = this.deviceParams();
        var message = this.el('probe-message');
        var button = this.el('probe');
        message.classList.replace('form-ok', 'form-error');
        message.textContent = '';
        button.disabled = true;
        button.textContent = 'Probing\u2026';
        this.invalidate();
        return h5gateApi('OnvifProbe', device).then(function (res) {
            if (!res.bStatus) {
                message.textContent = res.strCode || 'probe failed';
                return;
            }
            var profiles = res.profile || [];
            if (!profiles.length) {
                message.textContent = 'the device reports no media profiles';
                return;
            }
            self.probed = device;
            self.renderProfiles(profiles);
            message.classList.replace('form-error', 'form-ok');
            message.textContent = 'Connected: ' + profiles.length +
                (profiles.length === 1 ? ' profile.' : ' profiles.');
            self.suggestName(device);
            self.el('profiles-card').hidden = false;
            self.el('add-card').hidden = false;
            self.el('add-card').scrollIntoView({ block: 'nearest' });
        }).catch(function (err) {
            message.textContent = 'cannot reach the server: ' + err.message;
        }).then(function () {
            button.disabled = false;
            button.textContent = 'Probe';
        });
    },

    renderProfiles: function (profiles) {
        var body = this.el('profile-rows');
        body.textContent = '';
        var main = this.el('profile-main');
        var sub = this.el('profile-sub');
        main.textContent = '';
        sub.textContent = '';
        sub.appendChild(h5gateEl('option', { value: '', text: 'none (main only)' }));
        profiles.forEach(function (p) {
            body.appendChild(h5gateEl('tr', { 'data-profile': p.strToken }, [
                h5gateEl('td', { class: 'mono', text: p.strToken }),
                h5gateEl('td', { text: p.strCodecName || '\u2014' }),
                h5gateEl('td', { text: h5gateProfileSize(p) }),
                h5gateEl('td', { text: p.nFps ? String(p.nFps) : '\u2014' }),
                h5gateEl('td', { text: p.nBandwidth ? p.nBandwidth + ' kbit/s' : '\u2014' }),
                h5gateEl('td', { class: 'mono url', title: p.strRtspUrl || '',
                    text: p.bGotUrl ? p.strRtspUrl : 'no stream URL' })
            ]));
            main.appendChild(h5gateEl('option', { value: p.strToken, text: h5gateProfileLabel(p) }));
            sub.appendChild(h5gateEl('option', { value: p.strToken, text: h5gateProfileLabel(p) }));
        });
        if (profiles.length > 1) {
            sub.value = profiles[profiles.length - 1].strToken;
        }
        this.el('profile-auto').checked = true;
        this.syncProfileChoice();
    },

    syncProfileChoice: function () {
        var manual = this.el('profile-manual').checked;
        this.el('profile-main').disabled = !manual;
        this.el('profile-sub').disabled = !manual;
    },

    suggestName: function (device) {
        if (this.named) {
            return;
        }
        var f = this.el('onvif-add-form').elements;
        var name = this.deviceName || device.ip;
        f.name.value = name;
        var base = h5gateTokenFrom(this.deviceName) || h5gateTokenFrom('onvif_' + device.ip);
        f.token.value = base;
    },

    add: function () {
        var f = this.el('onvif-add-form').elements;
        var message = this.el('onvif-add-message');
        var button = this.el('add-camera');
        var editing = H5gateSources.editing;
        if (!this.probed && !editing) {
            message.textContent = 'probe the camera first';
            return Promise.resolve();
        }
        var device = this.probed || this.deviceParams();
        if (editing && !device.password) {
            delete device.password;  /* keep the stored one */
        }
        var params = Object.assign({}, device, {
            name: f.name.value.trim() || f.token.value.trim(),
            token: f.token.value.trim(),
            audio: f.audio.checked ? 'true' : 'false'
        });
        if (this.probed && this.el('profile-auto').checked) {
            params.profileauto = 'true';
        }
        if (this.probed && this.el('profile-manual').checked) {
            params.main = this.el('profile-main').value;
            if (this.el('profile-sub').value) {
                params.sub = this.el('profile-sub').value;
            }
        }
        message.textContent = '';
        button.disabled = true;
        button.textContent = 'Adding\u2026';
        return h5gateApi(editing ? 'UpdateSrcONVIF' : 'AddSrcONVIF', params).then(function (res) {
            if (!res.bStatus) {
                message.textContent = res.strCode || 'add failed';
                return;
            }
            if (editing) {
                h5gateNotify('Source "' + params.name + '" saved', false);
                H5gateSources.reset();
                H5gateSources.load();
                return;
            }
            window.location.href = h5gateBase() + '/?added=' + encodeURIComponent(params.token);
        }).catch(function (err) {
            message.textContent = 'cannot reach the server: ' + err.message;
        }).then(function () {
            button.disabled = false;
            button.textContent = H5gateSources.editing ? 'Save changes' : 'Add camera';
        });
    }
};

function h5gateAddCameraPage() {
    if (!h5gatePageStart()) {
        return;
    }
    var page = H5gateAddCamera;
    var sources = H5gateSources;
    Array.prototype.slice.call(document.querySelectorAll('[data-kind]')).forEach(function (b) {
        b.addEventListener('click', function () { sources.setKind(b.getAttribute('data-kind')); });
    });
    ['stream', 'file'].forEach(function (kind) {
        page.el(kind + '-form').addEventListener('submit', function (ev) {
            ev.preventDefault();
            sources.submit(kind);
        });
    });
    Array.prototype.slice.call(document.querySelectorAll('.cancel-edit')).forEach(function (b) {
        b.addEventListener('click', function () { sources.reset(); });
    });
    page.el('push-form').addEventListener('submit', function (ev) {
        ev.preventDefault();
        sources.addPush();
    });
    var query = new URLSearchParams(window.location.search);
    sources.setKind(['stream', 'push', 'file', 'onvif'].indexOf(query.get('kind')) >= 0 ? query.get('kind') : 'stream');
    sources.load().then(function () {
        if (query.get('edit')) {
            sources.edit(query.get('edit'));
        }
    });
    page.el('search').addEventListener('click', function () { page.search(); });
    var probeForm = page.el('probe-form');
    probeForm.addEventListener('submit', function (ev) {
        ev.preventDefault();
        page.probe();
    });
    probeForm.addEventListener('input', function (ev) {
        if (ev.target.name === 'ip' || ev.target.name === 'port') {
            page.deviceName = '';
        }
        page.invalidate();
    });
    page.el('profile-auto').addEventListener('change', function () { page.syncProfileChoice(); });
    page.el('profile-manual').addEventListener('change', function () { page.syncProfileChoice(); });
    var addForm = page.el('onvif-add-form');
    addForm.addEventListener('input', function (ev) {
        if (ev.target.name === 'name' || ev.target.name === 'token') {
            page.named = true;
        }
    });
    addForm.addEventListener('submit', function (ev) {
        ev.preventDefault();
        page.add();
    });
}
