/*
 * users.js - the console's users page: everyone may change their own password (UpdateUser with the old
 * one); an Administrator also lists users (GetUserList), adds (CreateUser), deletes (DeleteUser) and
 * changes roles (UpdateUser roletoken). Passwords leave the browser only as MD5, as the API wants.
 * Plain ES2017; uses console.js.
 */

var H5gateUsers = {
    me: '',
    roles: [],

    el: function (id) {
        return document.getElementById(id);
    },

    load: function () {
        var self = this;
        return h5gateApi('GetUserInfo', {}).then(function (info) {
            self.me = info.strUser || h5gateUser();
            self.el('me-name').textContent = self.me;
            self.el('me-role').textContent = info.strUserType ? '(' + info.strUserType + ')' : '';
            self.el('password-form').elements.username.value = self.me;
            if (info.strUserType !== 'Administrator') {
                return null;
            }
            self.el('users-card').hidden = false;
            return h5gateApi('GetRoleList', {}).then(function (res) {
                self.roles = (res.roles || []).map(function (r) { return r.strRoleToken; });
                var select = self.el('user-form').elements.role;
                select.textContent = '';
                self.roles.forEach(function (role) {
                    select.appendChild(h5gateEl('option', { value: role, text: role }));
                });
                select.value = self.roles.indexOf('Viewer') >= 0 ? 'Viewer' : self.roles[0];
                return self.loadUsers();
            });
        });
    },

    loadUsers: function () {
        var self = this;
        return h5gateApi('GetUserList', {}).then(function (res) {
            var body = self.el('user-rows');
            body.textContent = '';
            (res.users || []).forEach(function (u) {
                var select = h5gateEl('select', { class: 'role-select', 'aria-label': 'role of ' + u.strUser });
                self.roles.forEach(function (role) {
                    select.appendChild(h5gateEl('option', { value: role, text: role }));
                });
                select.value = u.strRoleToken;
                select.disabled = u.strUser === self.me;  /* no one demotes themselves by accident */
                select.addEventListener('change', function () { self.setRole(u.strUser, select); });
                var del = h5gateEl('button', { type: 'button', class: 'small danger', text: 'Delete',
                    onclick: function () { self.remove(u.strUser); } });
                del.disabled = u.strUser === self.me;
                body.appendChild(h5gateEl('tr', { 'data-user': u.strUser }, [
                    h5gateEl('td', { text: u.strUser + (u.strUser === self.me ? ' (you)' : '') }),
                    h5gateEl('td', {}, [select]),
                    h5gateEl('td', { class: 'actions' }, [del])
                ]));
            });
        });
    },

    setRole: function (user, select) {
        var self = this;
        h5gateApi('UpdateUser', { user: user, roletoken: select.value }).then(function (res) {
            h5gateNotify(res.bStatus ? user + ' is now ' + select.value : res.strCode, !res.bStatus);
            self.loadUsers();
        });
    },

    add: function () {
        var self = this;
        var f = this.el('user-form').elements;
        var message = this.el('user-message');
        message.textContent = '';
        return h5gateApi('CreateUser', { user: f.user.value.trim(), password: h5gateMd5(f.password.value),
            roletoken: f.role.value }).then(function (res) {
            if (!res.bStatus) {
                message.textContent = res.strCode || 'failed';
                return null;
            }
            h5gateNotify('User ' + f.user.value.trim() + ' added', false);
            f.user.value = '';
            f.password.value = '';
            return self.loadUsers();
        });
    },

    remove: function (user) {
        var self = this;
        if (!window.confirm('Delete user "' + user + '"?')) {
            return;
        }
        h5gateApi('DeleteUser', { user: user }).then(function (res) {
            h5gateNotify(res.bStatus ? 'User ' + user + ' deleted' : res.strCode, !res.bStatus);
            self.loadUsers();
        });
    },

    changePassword: function () {
        var f = this.el('password-form').elements;
        var message = this.el('password-message');
        message.textContent = '';
        if (f['new'].value !== f.again.value) {
            message.textContent = 'the two new passwords differ';
            return Promise.resolve();
        }
        return h5gateApi('UpdateUser', { user: this.me, oldpassword: h5gateMd5(f.old.value),
            newpassword: h5gateMd5(f['new'].value) }).then(function (res) {
            if (!res.bStatus) {
                message.textContent = res.strCode || 'failed';
                return;
            }
            f.old.value = f['new'].value = f.again.value = '';
            h5gateNotify('Password changed', false);
        });
    }
};

function h5gateUsersPage() {
    if (!h5gatePageStart()) {
        return;
    }
    var page = H5gateUsers;
    page.el('password-form').addEventListener('submit', function (ev) {
        ev.preventDefault();
        page.changePassword();
    });
    page.el('user-form').addEventListener('submit', function (ev) {
        ev.preventDefault();
        page.add();
    });
    page.load().catch(function (err) { h5gateNotify(err.message, true); });
}
