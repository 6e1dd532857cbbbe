/*
 * recordings.js - the console's recordings page: a source's recorded spans on a day's timeline, played
 * through H5sPlayerWS's playback mode (pbconf: pause, seek, speed), file downloads and the snapshots
 * gallery. Plain ES2017; uses console.js (h5gateApi, h5gateSession, h5gateEl, h5gateNotify) and
 * h5splayer.js.
 */

var H5GATE_DAY_MS = 86400000;
var H5GATE_RECORDINGS_REFRESH_MS = 15000;
var H5GATE_TICKS = { 86400: 3 * 3600000, 3600: 600000, 600: 60000 };  /* zoom (s) -> tick step (ms) */

function h5gatePad(n) {
    return (n < 10 ? '0' : '') + n;
}

function h5gateClock(ms) {
    var d = new Date(ms);
    return h5gatePad(d.getHours()) + ':' + h5gatePad(d.getMinutes()) + ':' + h5gatePad(d.getSeconds());
}

function h5gateFileUrl(path) {
    return path + '?session=' + encodeURIComponent(h5gateSession());
}

var H5gateRecordings = {
    token: '',
    dayStart: 0,
    records: [],
    player: null,
    begin: 0,          /* begintime of the current playback socket (ms) */
    playhead: 0,       /* recorded time being shown (ms), from H5S_EVENT_PB_TIME */
    paused: false,
    zoom: 86400,       /* seconds the timeline shows */
    windowStart: 0,

    el: function (id) {
        return document.getElementById(id);
    },

    loadSources: function () {
        var self = this;
        return h5gateApi('GetSrc', {}).then(function (res) {
            var select = self.el('source');
            select.innerHTML = '';
            (res.src || []).forEach(function (src) {
                var option = h5gateEl('option', { value: src.strToken, text: src.strName + ' (' + src.strToken + ')' });
                option.dataset.rec = src.bRec ? '1' : '';
                select.appendChild(option);
            });
            var wanted = new URLSearchParams(window.location.search).get('token');
            if (wanted) {
                select.value = wanted;
            }
            self.token = select.value;
        });
    },

    load: function () {
        var self = this;
        this.stop();
        this.token = this.el('source').value;
        var parts = this.el('day').value.split('-');
        this.dayStart = new Date(+parts[0], +parts[1] - 1, +parts[2]).getTime();
        this.windowStart = this.dayStart;
        this.zoom = 86400;
        var option = this.el('source').selectedOptions[0];
        this.el('continuous').checked = !!(option && option.dataset.rec);
        if (!this.token) {
            return Promise.resolve();
        }
        return Promise.all([this.loadRecords(), this.loadSnapshots(), this.loadStatus()]).then(function () {
            var last = self.records[self.records.length - 1];
            if (last) {
                self.setZoom(600, last.nStartTimeMs);
            }
        });
    },

    range: function () {
        return {
            token: this.token,
            start: new Date(this.dayStart).toISOString(),
            end: new Date(this.dayStart + H5GATE_DAY_MS).toISOString()
        };
    },

    loadRecords: function () {
        var self = this;
        var params = this.range();
        params.type = 'record';
        return h5gateApi('Search', params).then(function (res) {
            if (res.bStatus === false) {
                h5gateNotify(res.strCode, true);
            }
            self.records = res.record || [];
            self.renderList();
            self.renderTimeline();
        });
    },

    loadSnapshots: function () {
        var self = this;
        var params = this.range();
        params.type = 'snapshot';
        return h5gateApi('Search', params).then(function (res) {
            var box = self.el('shots');
            box.innerHTML = '';
            var shots = (res.record || []).slice(-60).reverse();
            shots.forEach(function (shot) {
                var url = h5gateFileUrl(shot.strPath);
                box.appendChild(h5gateEl('figure', {}, [
                    h5gateEl('a', { href: url, target: '_blank', rel: 'noopener' }, [
                        h5gateEl('img', { src: url, alt: shot.strPath, loading: 'lazy' })
                    ]),
                    h5gateEl('figcaption', { text: h5gateClock(shot.nStartTimeMs) })
                ]));
            });
            self.el('no-shots').hidden = shots.length > 0;
        });
    },

    loadStatus: function () {
        var self = this;
        var token = this.token;
        return Promise.all([
            h5gateApi('GetRecordStatus', { token: token }),
            h5gateApi('GetStorageInfo', {})
        ]).then(function (answers) {
            var status = (answers[0].src || [])[0];
            self.el('rec-status').textContent = status ? status.strStatus : '';
            var info = answers[1];
            var mine = (info.src || []).filter(function (s) { return s.strToken === token; })[0];
            if (info.nTotalByte) {
                var text = (info.nFreeByte / 1073741824).toFixed(1) + ' GB free of ' +
                    (info.nTotalByte / 1073741824).toFixed(1) + ' GB';
                if (mine) {
                    text += ' · this source: ' + (mine.nRecordByte / 1048576).toFixed(1) + ' MB in ' +
                        mine.nRecordFiles + ' files, ' + mine.fDaysHeld.toFixed(1) + ' days';
                }
                self.el('storage').textContent = text;
            }
        });
    },

    renderList: function () {
        var self = this;
        var box = this.el('spans');
        box.innerHTML = '';
        if (!this.records.length) {
            box.appendChild(h5gateEl('p', { class: 'muted', text: 'No recordings.' }));
            return;
        }
        var rows = this.records.map(function (rec, i) {
            var kind = rec.nType.replace('H5_REC_', '').toLowerCase();
            return h5gateEl('tr', { 'data-index': String(i), onclick: function () {
                self.playAt(rec.nStartTimeMs);
            } }, [
                h5gateEl('td', { class: 'clock', text: h5gateClock(rec.nStartTimeMs) }),
                h5gateEl('td', { text: rec.strDuration + ' s' + (rec.bRecording ? ' …' : '') }),
                h5gateEl('td', { class: 'muted', text: kind }),
                h5gateEl('td', {}, [h5gateEl('a', { href: h5gateFileUrl(rec.strPath), download: '',
                    onclick: function (ev) { ev.stopPropagation(); }, text: 'download' })])
            ]);
        });
        box.appendChild(h5gateEl('table', {}, [h5gateEl('tbody', {}, rows)]));
    },

    renderTimeline: function () {
        var line = this.el('timeline');
        var width = this.zoom * 1000;
        var start = this.windowStart;
        Array.prototype.slice.call(line.querySelectorAll('.span, .tick')).forEach(function (n) { n.remove(); });
        this.records.forEach(function (rec) {
            var a = Math.max(rec.nStartTimeMs, start);
            var b = Math.min(rec.nEndTimeMs, start + width);
            if (b <= a) {
                return;
            }
            line.appendChild(h5gateEl('div', {
                class: 'span ' + rec.nType,
                title: h5gateClock(rec.nStartTimeMs) + ' - ' + h5gateClock(rec.nEndTimeMs),
                style: 'left:' + (100 * (a - start) / width) + '%;width:' + (100 * (b - a) / width) + '%'
            }));
        });
        var step = H5GATE_TICKS[this.zoom];
        for (var t = Math.ceil(start / step) * step; t <= start + width; t += step) {
            var label = h5gateClock(t).slice(0, 5);
            line.appendChild(h5gateEl('span', { class: 'tick', text: label,
                style: 'left:' + (100 * (t - start) / width) + '%' }));
        }
        this.showPlayhead();
    },

    setZoom: function (seconds, around) {
        this.zoom = seconds;
        var centre = around || this.playhead || this.dayStart;
        var start = seconds === 86400 ? this.dayStart : centre - seconds * 500;
        this.windowStart = Math.max(this.dayStart, Math.min(start, this.dayStart + H5GATE_DAY_MS - seconds * 1000));
        this.renderTimeline();
    },

    showPlayhead: function () {
        var marker = this.el('playhead');
        var offset = this.playhead - this.windowStart;
        marker.style.display = this.playhead && offset >= 0 && offset <= this.zoom * 1000 ? 'block' : 'none';
        marker.style.left = (100 * offset / (this.zoom * 1000)) + '%';
    },

    recordAt: function (ms) {
        return this.records.filter(function (r) {
            return r.nStartTimeMs <= ms && ms < r.nEndTimeMs;
        })[0];
    },

    /* Play from a moment of the day; a moment between recordings plays the next one. */
    playAt: function (ms) {
        if (!this.recordAt(ms)) {
            var next = this.records.filter(function (r) { return r.nStartTimeMs > ms; })[0];
            if (!next) {
                h5gateNotify('nothing recorded after ' + h5gateClock(ms), true);
                return;
            }
            ms = next.nStartTimeMs;
        }
        this.playhead = ms;
        this.showPlayhead();
        if (this.player && ms >= this.begin) {
            this.player.seek(Math.floor((ms - this.begin) / 1000));
            this.setPaused(false);
            return;
        }
        this.stop();
        this.begin = Math.floor(ms / 1000) * 1000;
        var self = this;
        var video = this.el('pb-video');
        this.player = new H5sPlayerWS({
            videodom: video,
            protocol: window.location.protocol,
            host: window.location.host,
            rootpath: '/',
            token: this.token,
            session: h5gateSession(),
            streamprofile: 'main',
            consolelog: 'false',
            pbconf: {
                begintime: new Date(this.begin).toISOString(),
                endtime: new Date(this.dayStart + H5GATE_DAY_MS).toISOString(),
                autoplay: 'true',
                serverpb: 'true',
                filename: 'fake',
                callback: function (text) { self.onEvent(text); },
                userdata: null
            }
        });
        this.player.connect();
        var speed = this.el('speed').value;
        if (speed !== '1') {
            setTimeout(function () { if (self.player) { self.player.speed(speed); } }, 500);
        }
        this.el('hint').hidden = true;
        this.el('play').disabled = false;
        this.setPaused(false);
    },

    onEvent: function (text) {
        var event;
        try {
            event = JSON.parse(text);
        } catch (e) {
            return;
        }
        if (event.type === 'H5S_EVENT_PB_TIME') {
            this.playhead = Date.parse(event.pbTime.strTime);
            this.el('clock').textContent = h5gateClock(this.playhead);
            this.showPlayhead();
            this.showCurrent();
        } else if (event.type === 'H5S_EVENT_PB_END') {
            this.el('clock').textContent = h5gateClock(this.playhead) + ' (end)';
        }
    },

    showCurrent: function () {
        var rec = this.recordAt(this.playhead);
        var link = this.el('download');
        link.hidden = !rec;
        if (rec) {
            link.href = h5gateFileUrl(rec.strPath);
        }
        var index = this.records.indexOf(rec);
        Array.prototype.slice.call(document.querySelectorAll('#spans tr')).forEach(function (row) {
            row.classList.toggle('current', row.dataset.index === String(index));
        });
    },

    setPaused: function (paused) {
        this.paused = paused;
        this.el('play').textContent = paused ? 'Play' : 'Pause';
    },

    togglePause: function () {
        if (!this.player) {
            return;
        }
        var video = this.el('pb-video');
        if (this.paused) {
            this.player.resume();
            video.play().catch(function () { /* needs a gesture: the button is one */ });
        } else {
            this.player.pause();
            video.pause();
        }
        this.setPaused(!this.paused);
    },

    stop: function () {
        if (this.player) {
            this.player.disconnect();
            this.player = null;
        }
        this.playhead = 0;
        this.el('hint').hidden = false;
        this.el('play').disabled = true;
        this.el('download').hidden = true;
        this.el('clock').textContent = '--:--:--';
    },

    setContinuous: function (enable) {
        var self = this;
        h5gateApi('SetRecord', { token: this.token, enable: enable ? 'true' : 'false' }).then(function (res) {
            h5gateNotify(res.strCode, !res.bStatus);
            var option = self.el('source').selectedOptions[0];
            if (option && res.bStatus) {
                option.dataset.rec = enable ? '1' : '';
            }
            self.loadStatus();
        });
    },

    snapshot: function () {
        var self = this;
        h5gateApi('Snapshot', { token: this.token }).then(function (res) {
            h5gateNotify(res.strCode, !res.bStatus);
            self.loadSnapshots();
        });
    }
};

function h5gateRecordingsPage() {
    var page = H5gateRecordings;
    if (!h5gatePageStart(function () { page.stop(); })) {
        return;
    }
    var now = new Date();
    page.el('day').value = now.getFullYear() + '-' + h5gatePad(now.getMonth() + 1) + '-' + h5gatePad(now.getDate());
    page.el('source').addEventListener('change', function () { page.load(); });
    page.el('day').addEventListener('change', function () { page.load(); });
    page.el('continuous').addEventListener('change', function (ev) { page.setContinuous(ev.target.checked); });
    page.el('snap').addEventListener('click', function () { page.snapshot(); });
    page.el('play').addEventListener('click', function () { page.togglePause(); });
    page.el('speed').addEventListener('change', function (ev) {
        if (page.player) {
            page.player.speed(ev.target.value);
        }
    });
    page.el('timeline').addEventListener('click', function (ev) {
        var box = ev.currentTarget.getBoundingClientRect();
        page.playAt(page.windowStart + (ev.clientX - box.left) / box.width * page.zoom * 1000);
    });
    Array.prototype.slice.call(document.querySelectorAll('[data-zoom]')).forEach(function (button) {
        button.addEventListener('click', function () { page.setZoom(+button.dataset.zoom); });
    });
    page.loadSources().then(function () { return page.load(); });
    setInterval(function () {
        if (page.token && Date.now() < page.dayStart + H5GATE_DAY_MS) {
            page.loadRecords();
            page.loadStatus();
        }
    }, H5GATE_RECORDINGS_REFRESH_MS);
}
